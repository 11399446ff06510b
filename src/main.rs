//! The `edge-outbox` binary: parses the command line and runs the command.

use clap::Parser;
use std::time::Duration;

/// How long the exit waits for blocking tasks still running.
const EXIT_WAIT: Duration = Duration::from_millis(200);

fn main() -> std::process::ExitCode {
    // Before the runtime's threads and buffers exist, so that none of them is backed by huge pages.
    edge_outbox::memory::disable_transparent_huge_pages();
    let cli = edge_outbox::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let result = runtime.block_on(edge_outbox::cli::run(cli));
    // A blocking call still under way (a metadata request to a broker that is away waits out
    // its timeout) must not hold the exit: the command's own work is done and its store closed,
    // and after a drain the pod's grace period is nearly spent.
    runtime.shutdown_timeout(EXIT_WAIT);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            if let Some(exit) = error.downcast_ref::<edge_outbox::cli::Exit>() {
                return std::process::ExitCode::from(exit.0);
            }
            eprintln!("edge-outbox: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
