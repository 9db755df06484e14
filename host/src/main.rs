//! The `hotswap` command: parse the command line, run it, print any error's whole chain.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = hotswap::cli::Cli::parse();
    match hotswap::cli::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hotswap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
