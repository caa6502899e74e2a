//! `redis-topology`: parse the command line, run the command (see the crate doc).

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (cli, legacy_env) = service::env::parse::<cli::args::Cli>();
    for warning in legacy_env {
        eprintln!("redis-topology: warning: {warning}");
    }
    cli::commands::run(cli).await
}
