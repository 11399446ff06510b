//! Operator commands against a running sidecar: `status` and `dlq list|show|replay|purge`,
//! including clear refusals of unknown sequence numbers.

mod common;

use common::*;
use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::DevBroker;
use std::process::Output;

fn run(url: &str, args: &[&str]) -> Output {
    cli().args(args).args(["--url", url]).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dead_letter_commands() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sidecar = start(test_config(&kafka.bootstrap_servers(), dir.path())).await;
    let url = format!("http://{}", sidecar.addr());
    let t = "eventzr.integration-hub.webhook.failed.v1";
    post_poison(&kafka, &sidecar, &event(t, "parked-1", "tenant-o", 0)).await;

    let text = stdout(&run(&url, &["status"]));
    assert!(text.contains("dead letters         1"), "{text}");
    assert!(text.contains("store writable       true"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&url, &["status", "--json"]))).unwrap();
    assert_eq!(json["store"]["dead_letters"], 1);

    let list = stdout(&run(&url, &["dlq", "list"]));
    assert!(
        list.contains("parked-1") && list.contains("1 dead letters"),
        "{list}"
    );
    let seq = sidecar.store().dead_letters(0, 1).unwrap()[0]
        .seq
        .to_string();
    let shown = stdout(&run(&url, &["dlq", "show", &seq]));
    assert!(shown.contains("\"event_id\": \"parked-1\""), "{shown}");

    for args in [
        ["dlq", "replay", "999"],
        ["dlq", "purge", "999"],
        ["dlq", "show", "999"],
    ] {
        let refused = run(&url, &args);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("no dead letter with seq 999"),
            "{args:?}: {stderr}"
        );
    }
    let refused = run(&url, &["dlq", "replay"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--all"));

    let purged = stdout(&run(&url, &["dlq", "purge", "--all"]));
    assert!(purged.contains("1 purged"), "{purged}");
    assert_eq!(sidecar.store().stats().dead_letters, 0);
    assert!(stdout(&run(&url, &["dlq", "list"])).contains("0 dead letters"));
    sidecar.shutdown().await.unwrap();
}

fn inspect(dir: &std::path::Path, args: &[&str]) -> Output {
    cli()
        .args(["inspect", "--data-dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_counts_verifies_and_exports_a_stopped_store() {
    use edge_outbox::store::{Store, StoreConfig};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A store with five events, one of them parked, then stopped.
    let sidecar = start(test_config("127.0.0.1:9", &data)).await;
    let t = "eventzr.integration-hub.provider.updated.v1";
    for n in 0..5 {
        post_ok(sidecar.addr(), &event(t, &format!("i-{n}"), "tenant-i", n)).await;
    }
    sidecar
        .store()
        .park(2, "parked by the test".into())
        .await
        .unwrap();
    // While it runs, the store is refused with a clear reason.
    let busy = inspect(&data, &[]);
    assert!(!busy.status.success());
    let refusal = String::from_utf8_lossy(&busy.stderr);
    assert!(
        refusal.contains("holds the store") && refusal.contains("inspect reads a stopped store"),
        "{refusal}"
    );
    sidecar.shutdown().await.unwrap();

    let ok = inspect(&data, &["--verify"]);
    // Results on stdout, as one JSON object (so `inspect > file` keeps them).
    let report: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(report["verification"]["records_ok"], 4);
    assert_eq!(report["verification"]["dead_letters_ok"], 1);
    assert_eq!(report["backlog_events"], 4);
    assert_eq!(report["dead_letters"], 1);

    let export = dir.path().join("backlog.jsonl");
    let out = inspect(
        &data,
        &["--export", "backlog", "--output", export.to_str().unwrap()],
    );
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["event"]["id"], "i-0");
    assert_eq!(lines[0]["key"], "tenant-i");
    let dead = stdout(&inspect(&data, &["--export", "dead"]));
    assert!(
        dead.contains("parked by the test") && dead.contains("\"i-1\""),
        "{dead}"
    );

    // A flipped byte is found and named.
    flip_record_bytes(&data, 4);
    let bad = inspect(&data, &["--verify"]);
    assert!(!bad.status.success());
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["verification"]["corrupt"][0][1], 4);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("1 corrupt values"));
    // The store itself still opens.
    drop(Store::open(StoreConfig::new(&data)).unwrap());
}

/// Lines of a running command's standard output, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if send.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits for a line that `wanted` accepts (at most 20 s).
fn wait_line(lines: &std::sync::mpsc::Receiver<String>, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).expect("the line came in time");
        if wanted(&line) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_refreshes_and_keeps_watching_a_sidecar_that_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    // No broker answers: what is posted stays in the backlog.
    let sidecar = start(test_config("127.0.0.1:9", dir.path())).await;
    let url = format!("http://{}", sidecar.addr());
    let watch = |json: bool| {
        let mut command = cli();
        command.args(["status", "--watch", "--interval", "100ms", "--url", &url]);
        if json {
            command.arg("--json");
        }
        command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut text = watch(false);
    let mut json = watch(true);
    let (text_lines, json_lines) = (lines_of(&mut text), lines_of(&mut json));
    wait_line(&text_lines, |l| {
        l.starts_with("backlog") && l.contains(" 0 events")
    });
    let t = "eventzr.integration-hub.webhook.failed.v1";
    post_ok(sidecar.addr(), &event(t, "watched-1", "tenant-w", 0)).await;
    wait_line(&text_lines, |l| {
        l.starts_with("backlog") && l.contains(" 1 events")
    });
    let line = wait_line(&json_lines, |l| l.contains("\"backlog_events\":1"));
    let status: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(status["store"]["backlog_events"], 1);
    // The sidecar goes away: each refresh says so, and the watch goes on.
    sidecar.shutdown().await.unwrap();
    wait_line(&text_lines, |l| l.contains(&url) && l.contains("status"));
    let line = wait_line(&json_lines, |l| l.contains("\"error\""));
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_ok(),
        "{line}"
    );
    assert!(text.try_wait().unwrap().is_none() && json.try_wait().unwrap().is_none());
    for mut child in [text, json] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
