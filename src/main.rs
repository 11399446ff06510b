//! The `edge-outbox` binary: parses the command line and runs the command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = edge_outbox::cli::Cli::parse();
    match edge_outbox::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edge-outbox: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
