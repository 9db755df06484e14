//! The `hotswap` command. Everything is in the library: see `hotswap::cli`.

fn main() -> std::process::ExitCode {
    hotswap::cli::main()
}
