//! The `edge-outbox` binary: parses the command line and runs the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads and buffers exist, so that none of them is backed by huge pages.
    edge_outbox::memory::disable_transparent_huge_pages();
    let cli = edge_outbox::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    match runtime.block_on(edge_outbox::cli::run(cli)) {
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
