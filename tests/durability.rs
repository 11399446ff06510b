//! "Acknowledged means durable", checked on the real binary: it runs under `strace`, and for
//! every `202 Accepted` written to a client the trace must show an `fdatasync` of sled's
//! database file that completed after that request was read and before the answer was written.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A completed `fdatasync` of the store's `db` file, in either of strace's two forms.
fn is_db_sync(line: &str) -> bool {
    let completed = (line.contains("fdatasync(") && !line.contains("<unfinished"))
        || line.contains("<... fdatasync resumed>");
    completed && line.trim_end().ends_with("= 0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_is_written_only_after_fdatasync() {
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "this test needs strace: apt-get install strace (.ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let port = free_port();
    let mut child = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-s",
            "48",
            "-e",
            "trace=fdatasync,read,recvfrom,write,writev,sendto,sendmsg",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_edge-outbox"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        // No broker is needed to acknowledge: the relay only retries in the background.
        .args(["--brokers", "127.0.0.1:9", "--flush-interval", "1h"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: killing strace alone would leave the traced sidecar running.
        .process_group(0)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the sidecar did not start under strace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const REQUESTS: usize = 5;
    for n in 0..REQUESTS {
        let e = event(
            "eventzr.integration-hub.execution.completed.v1",
            &format!("durable-{n}"),
            "tenant-d",
            n as u64,
        );
        let answer = post_event(format!("127.0.0.1:{port}").parse().unwrap(), &e).await;
        assert_eq!(answer.status, 202);
    }
    // SIGKILL to the whole group: strace and the sidecar it traces.
    let group = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGKILL) }, 0);
    child.wait().unwrap();

    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut answers = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("HTTP/1.1 202") {
            continue;
        }
        answers += 1;
        let request = lines[..i]
            .iter()
            .rposition(|l| l.contains("POST /v1/events"))
            .unwrap_or_else(|| panic!("no request read before the answer at line {i}"));
        let synced = lines[request..i]
            .iter()
            .any(|l| is_db_sync(l) && l.contains("/db>"));
        assert!(
            synced,
            "answer at trace line {i} was written without an fdatasync of the db file after its request (line {request})"
        );
    }
    assert_eq!(answers, REQUESTS, "every answer was traced");
}
