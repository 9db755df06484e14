//! The `hotswap` command, built inside the test package so the tests can run it as a child
//! process. Identical to `host/src/main.rs`.

fn main() -> std::process::ExitCode {
    hotswap::cli::main()
}
