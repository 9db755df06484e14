//! `hotswap new`: writes a ready guest crate: the SDK dependency, a size-and-speed build profile
//! for the module, a first test through [`crate::testing`], a script that checks a reload from
//! the previous version, and a CI workflow that runs both.
//!
//! The files are templates in `src/scaffold/`, with `@NAME@`-style placeholders filled here.

use clap::Args;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// `hotswap new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The crate's name (letters, digits, `-` and `_`, starting with a letter); also the name of
    /// the directory written.
    pub name: String,
    /// Depend on the SDK and the host in this Hotswap checkout, by path (default: the checkout
    /// this `hotswap` was built from, if it is still there).
    #[arg(long, value_name = "PATH", conflicts_with = "git")]
    pub sdk: Option<PathBuf>,
    /// Depend on the SDK and the host by git, from this repository URL (what CI needs).
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// Write the crate in this directory, as DIR/NAME.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// Why `hotswap new` wrote nothing, or stopped part-way.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a crate's.
    #[error(
        "{0:?} cannot name a crate: use letters, digits, `-` and `_`, starting with a letter, and not a Rust keyword or the name of a crate it depends on"
    )]
    BadName(String),
    /// The directory to write exists.
    #[error("{} already exists: `hotswap new` writes only a new directory, and never over a file", .0.display())]
    Exists(PathBuf),
    /// `--sdk` names no Hotswap checkout.
    #[error("{} is not a Hotswap checkout: it has no guest-sdk/Cargo.toml", .0.display())]
    NotACheckout(PathBuf),
    /// A `--git` URL with characters a URL does not need and a shell or YAML would act on.
    #[error(
        "{0:?} is not a repository URL this command writes into a workflow: use one without spaces, quotes or shell characters"
    )]
    BadUrl(String),
    /// Neither `--sdk` nor `--git`, and no checkout to fall back on.
    #[error("say where the SDK comes from: --sdk PATH (a Hotswap checkout) or --git URL")]
    NoSdk,
    /// A file or directory could not be written.
    #[error("cannot write {}", .path.display())]
    Write {
        /// What was being written.
        path: PathBuf,
        /// Why not.
        #[source]
        source: io::Error,
    },
}

/// Where the SDK and the host come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A checkout on this machine (absolute).
    Path(PathBuf),
    /// A git repository URL.
    Git(String),
}

impl Source {
    /// The dependency line for one of the repository's crates, found in `dir` of it.
    fn dependency(&self, package: &str, dir: &str) -> String {
        match self {
            Source::Path(root) => {
                let path = root.join(dir);
                let path = toml_string(&path.display().to_string());
                format!("{package} = {{ path = {path} }}")
            }
            Source::Git(url) => format!("{package} = {{ git = {} }}", toml_string(url)),
        }
    }

    /// The workflow's repository URL, and the comment above the step that uses it.
    fn workflow_repo(&self) -> (&str, &'static str) {
        match self {
            Source::Git(url) => (
                url,
                "Hotswap's repository, as given to `hotswap new --git`.",
            ),
            Source::Path(_) => (
                "REPO-URL",
                "Replace REPO-URL with Hotswap's repository URL, and depend on hotswap-guest and hotswap by `git` in Cargo.toml: CI cannot see the checkout this crate was made from.",
            ),
        }
    }
}

/// `text` as a TOML basic string, quoted.
fn toml_string(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Runs `hotswap new`: writes the crate and prints what to do next.
pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    let source = match (&args.sdk, &args.git) {
        (Some(path), _) => checkout(path)?,
        (None, Some(url)) => {
            let plain = |c: char| c.is_ascii_alphanumeric() || "-._~:/@+%=?&#,".contains(c);
            if url.is_empty() || !url.chars().all(plain) {
                return Err(ScaffoldError::BadUrl(url.clone()).into());
            }
            Source::Git(url.clone())
        }
        (None, None) => built_from().ok_or(ScaffoldError::NoSdk)?,
    };
    let root = write(&args.dir, &args.name, &source)?;
    let how = match &source {
        Source::Path(path) => format!("the SDK from {}", path.display()),
        Source::Git(url) => format!("the SDK from {url}"),
    };
    println!("created {} ({how})", root.display());
    println!("next:");
    println!("  cd {}", root.display());
    println!("  cargo build --profile wasm --target wasm32-wasip1");
    println!("  cargo test --release");
    println!(
        "  hotswap run target/wasm32-wasip1/wasm/{}.wasm --watch",
        lib_name(&args.name)
    );
    Ok(())
}

/// A Hotswap checkout at `path`, made absolute (the crate may be built from anywhere).
fn checkout(path: &Path) -> Result<Source, ScaffoldError> {
    let not_a_checkout = || ScaffoldError::NotACheckout(path.to_owned());
    if !path.join("guest-sdk/Cargo.toml").is_file() {
        return Err(not_a_checkout());
    }
    let root = fs::canonicalize(path).map_err(|_| not_a_checkout())?;
    Ok(Source::Path(root))
}

/// The checkout this binary was built from, if it is still there.
fn built_from() -> Option<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    checkout(root).ok()
}

/// The name as Rust code spells the library: `my-app` → `my_app` (the module is `my_app.wasm`).
fn lib_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Writes the crate `name` into `dir` and returns its directory. Refuses a bad name or an
/// existing directory before writing anything.
pub fn write(dir: &Path, name: &str, source: &Source) -> Result<PathBuf, ScaffoldError> {
    // Names a crate may not take: Rust keywords (the library is named after the crate) and
    // the crates it depends on.
    const TAKEN: &[&str] = &[
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "test",
        "hotswap",
        "hotswap-guest",
        "hotswap_guest",
        "serde",
        "anyhow",
    ];
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !TAKEN.contains(&name);
    if !valid {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let root = dir.join(name);
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    fs::create_dir(&root).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => ScaffoldError::Exists(root.clone()),
        io::ErrorKind::NotADirectory => ScaffoldError::Exists(dir.to_owned()),
        _ => write_err(&root)(e),
    })?;
    for (path, text, executable) in files(name, source) {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        fs::write(&path, text).map_err(write_err(&path))?;
        if executable {
            use std::os::unix::fs::PermissionsExt as _;
            let permissions = fs::Permissions::from_mode(0o755);
            fs::set_permissions(&path, permissions).map_err(write_err(&path))?;
        }
    }
    Ok(root)
}

/// Every file of the crate: its path, its text, and whether it is executable.
fn files(name: &str, source: &Source) -> Vec<(&'static str, String, bool)> {
    let lib = lib_name(name);
    let (repo, repo_note) = source.workflow_repo();
    let fill = |template: &str| {
        template
            .replace("@NAME@", name)
            .replace("@LIB@", &lib)
            .replace(
                "@GUEST_DEP@",
                &source.dependency("hotswap-guest", "guest-sdk"),
            )
            .replace("@HOST_DEP@", &source.dependency("hotswap", "host"))
            .replace("@REPO_NOTE@", repo_note)
            .replace("@REPO@", repo)
    };
    vec![
        (
            "Cargo.toml",
            fill(include_str!("scaffold/Cargo.toml.tmpl")),
            false,
        ),
        (
            "src/lib.rs",
            fill(include_str!("scaffold/lib.rs.tmpl")),
            false,
        ),
        (
            "tests/app.rs",
            fill(include_str!("scaffold/test.rs.tmpl")),
            false,
        ),
        (
            "events.txt",
            fill(include_str!("scaffold/events.txt")),
            false,
        ),
        (
            "check-reload.sh",
            fill(include_str!("scaffold/check-reload.sh")),
            true,
        ),
        (
            ".github/workflows/reload.yml",
            fill(include_str!("scaffold/reload.yml")),
            false,
        ),
        (
            ".gitignore",
            fill(include_str!("scaffold/gitignore")),
            false,
        ),
    ]
}
