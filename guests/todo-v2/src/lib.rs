//! A to-do list served over HTTP, version 2: a schema change. A to-do is now a record with a
//! `done` flag, so `STATE_VERSION` is 2 and `migrate` turns version 1's titles into records.
//!
//! Routes: those of version 1 (without `/panic`), plus `POST /todos/N/done`. `GET /todos`
//! shows each to-do as `[ ]` or `[x]`.

use hotswap_guest::http::{Request, Response, ResponseExt};
use hotswap_guest::{App, MigrateError};
use serde::{Deserialize, Serialize};

const VERSION: &str = "todo-v2";

/// State, shape 2.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Todos {
    items: Vec<Item>,
    hits: u64,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Item {
    title: String,
    done: bool,
}

/// State, shape 1, as version 1 wrote it.
#[derive(Default, Deserialize)]
#[serde(default)]
struct TodosV1 {
    items: Vec<String>,
    hits: u64,
}

impl App for Todos {
    const STATE_VERSION: u32 = 2;

    fn migrate(from_version: u32, old_state: &[u8]) -> Result<Self, MigrateError> {
        match from_version {
            1 => {
                let old: TodosV1 = hotswap_guest::decode(old_state)?;
                let items = old
                    .items
                    .into_iter()
                    .map(|title| Item { title, done: false })
                    .collect();
                Ok(Todos {
                    items,
                    hits: old.hits,
                })
            }
            other => Err(MigrateError::new(format!(
                "{VERSION} cannot migrate state version {other}"
            ))),
        }
    }

    fn message(&mut self, _input: &[u8]) -> Vec<u8> {
        format!("{VERSION}: {} to-dos, {} hits", self.items.len(), self.hits).into_bytes()
    }

    fn http(&mut self, request: &Request) -> Response {
        let path: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
        let response = match (request.method.as_str(), path.as_slice()) {
            ("GET", ["todos"]) => {
                let list: String = self
                    .items
                    .iter()
                    .map(|item| format!("[{}] {}\n", if item.done { "x" } else { " " }, item.title))
                    .collect();
                Response::text(200, list)
            }
            ("POST", ["todos"]) => {
                let title = String::from_utf8_lossy(&request.body.0).trim().to_owned();
                self.items.push(Item { title, done: false });
                Response::text(201, format!("added #{}\n", self.items.len()))
            }
            ("POST", ["todos", n, "done"]) => match n
                .parse::<usize>()
                .ok()
                .and_then(|n| self.items.get_mut(n.wrapping_sub(1)))
            {
                Some(item) => {
                    item.done = true;
                    Response::text(200, format!("done: {}\n", item.title))
                }
                None => Response::text(404, "no such to-do\n"),
            },
            ("POST", ["hit"]) => {
                self.hits += 1;
                Response::text(200, format!("{VERSION} hits={}", self.hits))
            }
            ("GET", ["version"]) => Response::text(200, VERSION),
            _ => Response::text(404, "no such route\n"),
        };
        response.header("x-app-version", VERSION)
    }
}

hotswap_guest::export_app!(Todos);
