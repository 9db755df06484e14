//! A to-do list served over HTTP, version 1. Run it with `hotswap run todo_v1.wasm --http
//! 127.0.0.1:8080`.
//!
//! Routes: `GET /todos` lists, `POST /todos` adds the body as a to-do, `POST /hit` counts a hit
//! and replies with the count, `GET /version` names the version, and `GET /panic` panics (the
//! host answers 500 and serves on). Every response names the version in `x-app-version`.
//!
//! `guests/in-place/todo` builds this same code with the feature `in-place`: the state then
//! stays in linear memory across a swap to a version with the same layout.

use hotswap_guest::App;
use hotswap_guest::http::{Request, Response, ResponseExt};
use serde::{Deserialize, Serialize};

const VERSION: &str = "todo-v1";

/// State, shape 1: the to-dos are plain titles.
#[derive(Default, Serialize, Deserialize)]
#[cfg_attr(feature = "in-place", derive(hotswap_guest::InPlace))]
#[serde(default)]
struct Todos {
    items: Vec<String>,
    hits: u64,
}

impl App for Todos {
    fn message(&mut self, _input: &[u8]) -> Vec<u8> {
        format!("{VERSION}: {} to-dos, {} hits", self.items.len(), self.hits).into_bytes()
    }

    fn http(&mut self, request: &Request) -> Response {
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/todos") => {
                let list: String = self
                    .items
                    .iter()
                    .map(|title| format!("- {title}\n"))
                    .collect();
                Response::text(200, list)
            }
            ("POST", "/todos") => {
                self.items
                    .push(String::from_utf8_lossy(&request.body.0).trim().to_owned());
                Response::text(201, format!("added #{}\n", self.items.len()))
            }
            ("POST", "/hit") => {
                self.hits += 1;
                Response::text(200, format!("{VERSION} hits={}", self.hits))
            }
            ("GET", "/version") => Response::text(200, VERSION),
            ("GET", "/panic") => panic!("{VERSION}: /panic was requested"),
            _ => Response::text(404, "no such route\n"),
        };
        response.header("x-app-version", VERSION)
    }
}

#[cfg(not(feature = "in-place"))]
hotswap_guest::export_app!(Todos);
#[cfg(feature = "in-place")]
hotswap_guest::export_app!(Todos, in_place);
