//! The `edge-outbox` binary: parses the command line and runs the command.

use clap::Parser;

/// mimalloc: the relay and the ingest path allocate and free many small buffers per event
/// (decoded records, headers, delivery futures); glibc's malloc spent a third of the relay's
/// CPU consolidating its free lists. Measured in docs/PERFORMANCE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before the runtime's threads and buffers exist, so that none of them is backed by huge pages.
    edge_outbox::memory::disable_transparent_huge_pages();
    return_freed_pages_at_once();
    let cli = edge_outbox::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    match runtime.block_on(edge_outbox::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edge-outbox: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// mimalloc hands a thread's freed pages back to the system only when that thread allocates
/// again; threads idle after a burst (HTTP handlers, the blocking pool) kept theirs: 200 MiB
/// resident after a million events were ingested. A collection once a second hands back
/// what the arenas hold free, whichever thread freed it.
fn return_freed_pages_at_once() {
    std::thread::Builder::new()
        .name("mimalloc-collect".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: mi_collect only releases memory mimalloc holds free.
            unsafe { libmimalloc_sys::mi_collect(true) };
        })
        .expect("a thread starts");
}
