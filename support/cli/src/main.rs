//! `redis-topology`: parse the command line, run the command (see the crate doc).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    cli::commands::run(cli::args::Cli::parse()).await
}
