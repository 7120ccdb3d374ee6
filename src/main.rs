//! The `switchyard` command line: a thin shell over the library.

use clap::Parser;
use std::process::ExitCode;
use switchyard::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", cli::describe_error(&error));
            ExitCode::FAILURE
        }
    }
}
