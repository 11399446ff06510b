//! "Acknowledged means durable", checked on the real binary: it runs under `strace`, and for
//! every `202 Accepted` written to a client the trace must show an `fdatasync` of the store's
//! log (its segment file) that completed after that request was read and before the answer was
//! written.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `lines` show a completed `fdatasync` of a segment file. strace splits a call that
/// another thread interrupts into `fdatasync(fd</path> <unfinished ...>` and a later
/// `<... fdatasync resumed>) = 0` of the same pid: the path is on the first, the result on the
/// second.
fn segment_synced(lines: &[&str]) -> bool {
    let is_segment = |line: &str| line.contains("/segments/") && line.contains(".log>");
    let succeeded = |line: &str| line.trim_end().ends_with("= 0");
    let pid = |line: &str| line.split_whitespace().next().unwrap_or("").to_string();
    let mut unfinished = std::collections::HashSet::new();
    for line in lines {
        if line.contains("fdatasync(") && line.contains("<unfinished") {
            if is_segment(line) {
                unfinished.insert(pid(line));
            }
        } else if line.contains("fdatasync(") {
            if is_segment(line) && succeeded(line) {
                return true;
            }
        } else if line.contains("<... fdatasync resumed>")
            && succeeded(line)
            && unfinished.contains(&pid(line))
        {
            return true;
        }
    }
    false
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
    let mut child = without_caller_settings(Command::new("strace"))
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
        let synced = segment_synced(&lines[request..i]);
        assert!(
            synced,
            "answer at trace line {i} was written without an fdatasync of the segment file after its request (line {request}):\n{}",
            lines[request..=i].join("\n")
        );
    }
    assert_eq!(answers, REQUESTS, "every answer was traced");
}
