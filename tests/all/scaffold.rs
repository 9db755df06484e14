//! `hotswap new`: the crate it writes, outside the repository, builds a module the host accepts
//! and passes its own test; it never writes over anything.

use crate::cli::{run, stderr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The repository's root: the checkout `--sdk` points at.
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `cargo` (the one running these tests) in `dir`.
fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(dir).args(args);
    command
}

fn succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
}

#[test]
fn new_writes_a_crate_that_builds_a_module_and_passes_its_own_test() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root().to_str().unwrap();
    let made = run(
        &[
            "new",
            "demo",
            "--sdk",
            root,
            "--dir",
            dir.path().to_str().unwrap(),
        ],
        "",
    );
    succeeded("hotswap new", &made);
    let app = dir.path().join("demo");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "tests/app.rs",
        "events.txt",
        ".gitignore",
    ] {
        assert!(app.join(file).is_file(), "no {file}");
    }
    let workflow = std::fs::read_to_string(app.join(".github/workflows/reload.yml")).unwrap();
    assert!(workflow.contains("./check-reload.sh"), "{workflow}");
    use std::os::unix::fs::PermissionsExt as _;
    let script = std::fs::metadata(app.join("check-reload.sh")).unwrap();
    assert_eq!(
        script.permissions().mode() & 0o111,
        0o111,
        "check-reload.sh is executable"
    );

    // The module, in a target directory of its own: it is small.
    let wasm_target = dir.path().join("target");
    let built = cargo(
        &app,
        &["build", "--profile", "wasm", "--target", "wasm32-wasip1"],
    )
    .env("CARGO_TARGET_DIR", &wasm_target)
    .output()
    .unwrap();
    succeeded("cargo build --profile wasm", &built);
    let module = wasm_target.join("wasm32-wasip1/wasm/demo.wasm");
    succeeded(
        "hotswap check",
        &run(&["check", module.to_str().unwrap()], ""),
    );

    let (took, output) = own_test(&app, &module);
    succeeded("the crate's own cargo test", &output);
    let log = stderr(&output);
    let compiled: Vec<&str> = log.lines().filter(|l| l.contains("Compiling")).collect();
    eprintln!("the crate's own test: built and ran in {took:.1?}; compiled: {compiled:#?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("test counts_and_keeps_the_count_across_a_swap ... ok"),
        "{stdout}"
    );

    check_reload_builds_both_versions(&app, &wasm_target);
}

/// check-reload.sh with the real `hotswap test`: after two commits, it tests the previous
/// commit's module against the working tree's, each built from its own source, and passes.
fn check_reload_builds_both_versions(app: &Path, target: &Path) {
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .current_dir(app)
            .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .unwrap();
        succeeded(&format!("git {args:?}"), &output);
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "v1"]);
    let lib = app.join("src/lib.rs");
    let v1 = std::fs::read_to_string(&lib).unwrap();
    let v2 = v1.replace("self.value += 1", "self.value += 2");
    assert_ne!(v1, v2, "the counter's step is in src/lib.rs");
    std::fs::write(&lib, v2).unwrap();
    git(&["commit", "-qam", "v2"]);

    let output = Command::new(app.join("check-reload.sh"))
        .env("CARGO_TARGET_DIR", target)
        .env("HOTSWAP", crate::cli::hotswap_bin())
        .output()
        .unwrap();
    succeeded("check-reload.sh", &output);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.starts_with("ok: "),
        "hotswap test passes v1 → v2: {said}"
    );
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log
        .lines()
        .find_map(|l| l.split_once(" test ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("check-reload.sh ran no `hotswap test`: {log}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let [prev, new, events_flag, events] = words[..] else {
        panic!("hotswap test was run with {line:?}");
    };
    assert_eq!((events_flag, events), ("--events", "events.txt"));
    let mut v1 = hotswap::testing::TestApp::start(prev).unwrap();
    let mut v2 = hotswap::testing::TestApp::start(new).unwrap();
    let replies = (v1.send("inc").unwrap(), v2.send("inc").unwrap());
    assert_eq!(replies, ("value=1".into(), "value=2".into()));
}

/// Runs the generated crate's own `cargo test` in the target directory and profile these tests
/// were built in, with the repository's `Cargo.lock` and profile settings: the host library's
/// dependencies (wasmtime) are reused instead of compiled again.
fn own_test(app: &Path, module: &Path) -> (std::time::Duration, Output) {
    std::fs::copy(repo_root().join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    // The features `cargo test --workspace` (the README's test command) enables on the host
    // library's dependencies: with the same ones, wasmtime is reused, not compiled again (a run
    // of only this package compiles it once more).
    let manifest = app.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "[dev-dependencies]\n",
        "[dev-dependencies]\nmemchr = \"2\"\n",
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    // CARGO_TARGET_TMPDIR is <target>/tmp; this test runs from <target>/<profile>/deps/.
    let target: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .into();
    let exe = std::env::current_exe().unwrap();
    let profile = exe.ancestors().nth(2).unwrap().file_name().unwrap();
    let mut test = cargo(app, &["test"]);
    match profile.to_str() {
        Some("release") => {
            // As the repository's `[profile.release]` says.
            test.arg("--release")
                .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only");
        }
        Some("debug") => {}
        _ => {
            test.arg("--profile").arg(profile);
        }
    }
    let started = Instant::now();
    let output = test
        .env("CARGO_TARGET_DIR", &target)
        .env("APP_WASM", module)
        .output()
        .unwrap();
    (started.elapsed(), output)
}

#[test]
fn new_refuses_an_existing_directory_a_bad_name_and_a_path_that_is_no_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    let root = repo_root().to_str().unwrap();
    succeeded(
        "hotswap new",
        &run(&["new", "app", "--sdk", root, "--dir", parent], ""),
    );
    let lib = dir.path().join("app/src/lib.rs");
    std::fs::write(&lib, "// mine").unwrap();

    let again = run(&["new", "app", "--sdk", root, "--dir", parent], "");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("app already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&lib).unwrap(), "// mine");

    let bad = run(&["new", "my app", "--sdk", root, "--dir", parent], "");
    assert!(
        stderr(&bad).contains("cannot name a crate"),
        "{}",
        stderr(&bad)
    );
    let nowhere = run(&["new", "other", "--sdk", parent, "--dir", parent], "");
    assert!(
        stderr(&nowhere).contains("not a Hotswap checkout"),
        "{}",
        stderr(&nowhere)
    );
    assert!(!dir.path().join("other").exists());
}
