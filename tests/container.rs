//! The sidecar's image, built from `packaging/Dockerfile` with podman and run as Kubernetes runs
//! it: non-root (10001), read-only root filesystem, every capability dropped, the store on a
//! volume. Its health check passes; events posted from outside reach Apache Kafka outside it;
//! SIGTERM drains and exits 0; the store survives a container restart on its volume.
//!
//! The final stage is built exactly as users build it, with `BINARY_STAGE=prebuilt`: around the
//! binary of this test build, where users put their `cargo build --release` one (compiling
//! in the build stage takes 20-30 minutes here). scripts/install-test-deps sets podman up (and
//! says why when it cannot: then this test reports that it skipped).

mod common;

use common::kafka::Kafka;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TOPIC: &str = "eventzr.integration-hub.integration.enabled.v1";

fn podman_dir() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/edge-outbox/podman")
}

fn podman(args: &[&str]) -> Output {
    let dir = podman_dir();
    Command::new("podman")
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .args(args)
        .output()
        .expect("podman runs")
}

fn podman_ok(args: &[&str]) -> String {
    let output = podman(args);
    assert!(
        output.status.success(),
        "podman {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Removes the test's containers, volume and image, also when it fails.
struct Cleanup {
    image: String,
    volume: String,
    names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = podman(&["rm", "-f", name]);
        }
        let _ = podman(&["volume", "rm", "-f", &self.volume]);
        let _ = podman(&["rmi", "-f", &self.image]);
    }
}

/// Runs the image as Kubernetes would (the pod's network is the host's loopback here).
fn run_sidecar(image: &str, name: &str, volume: &str, brokers: &str, port: u16) {
    podman_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--user",
        "10001",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "host",
        "--health-interval",
        "disable",
        "-v",
        &format!("{volume}:/var/lib/edge-outbox"),
        image,
        "serve",
        "--config",
        "/etc/edge-outbox/edge-outbox.toml",
        "--brokers",
        brokers,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--flush-interval",
        "100ms",
        "--set",
        "relay.publish_summaries=false",
        "--set",
        "shutdown.intake_grace=\"0s\"",
        "--set",
        "shutdown.drain_timeout=\"3s\"",
    ]);
}

async fn wait_healthy(name: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the container did not serve: {}",
            String::from_utf8_lossy(&podman(&["logs", name]).stderr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The image's own HEALTHCHECK (edge-outbox probe), run the way the engine runs it.
    podman_ok(&["healthcheck", "run", name]);
}

/// SIGTERM (`podman stop`, 30 s grace) and the exit code.
fn stop(name: &str) -> i64 {
    podman_ok(&["stop", "-t", "30", name]);
    podman_ok(&["inspect", name, "--format", "{{.State.ExitCode}}"])
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_kubernetes_runs_it_delivers_drains_and_keeps_its_store() {
    if let Ok(reason) = std::fs::read_to_string(podman_dir().join("unavailable")) {
        eprintln!("SKIPPED: {}", reason.trim());
        return;
    }
    let id = std::process::id();
    let cleanup = Cleanup {
        image: format!("localhost/edge-outbox:test-{id}"),
        volume: format!("edge-outbox-test-{id}"),
        names: vec![
            format!("eo-{id}-a"),
            format!("eo-{id}-b"),
            format!("eo-{id}-c"),
        ],
    };
    // The build context: the Dockerfile's inputs, and this build's binary where the prebuilt
    // stage takes it from.
    let context = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(context.path().join("packaging")).unwrap();
    std::fs::create_dir_all(context.path().join("target/release")).unwrap();
    for file in ["Dockerfile", "edge-outbox.example.toml"] {
        std::fs::copy(
            root.join("packaging").join(file),
            context.path().join("packaging").join(file),
        )
        .unwrap();
    }
    let binary = context.path().join("target/release/edge-outbox");
    std::fs::copy(env!("CARGO_BIN_EXE_edge-outbox"), &binary).unwrap();
    // As the build stage does with its binary.
    assert!(Command::new("strip")
        .arg(&binary)
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    podman_ok(&[
        "build",
        "--format",
        "docker",
        "--build-arg",
        "BINARY_STAGE=prebuilt",
        "-f",
        &context
            .path()
            .join("packaging/Dockerfile")
            .display()
            .to_string(),
        "-t",
        &cleanup.image,
        &context.path().display().to_string(),
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&podman_ok(&["image", "inspect", &cleanup.image])).unwrap();
    let image = &inspect[0];
    let size = image["Size"].as_u64().unwrap();
    eprintln!(
        "image built in {:.1} s: {} MB (with this test build's stripped binary)",
        started.elapsed().as_secs_f64(),
        size / 1_000_000
    );
    assert_eq!(image["Config"]["User"], "10001");
    assert!(
        image["Config"]["Volumes"]["/var/lib/edge-outbox"].is_object(),
        "{image}"
    );
    assert_eq!(
        image["Config"]["Labels"]["org.opencontainers.image.title"],
        "edge-outbox"
    );
    assert!(
        image["Config"]["Labels"]["org.opencontainers.image.version"].is_string(),
        "{image}"
    );
    assert!(
        image["Healthcheck"]["Test"].to_string().contains("probe"),
        "the docker format keeps HEALTHCHECK: {image}"
    );
    let tools = podman_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &cleanup.image,
        "-c",
        "for t in cc gcc cargo rustc make; do command -v $t; done; id -u; id -g",
    ]);
    assert_eq!(
        tools, "10001\n10001",
        "no build tools, user and group 10001"
    );

    let kafka = Kafka::start();
    kafka.create_topics(&[TOPIC.to_string()], 3);
    // The image's HEALTHCHECK asks 127.0.0.1:8080, as in the pod: the container shares the
    // host's network here, as a sidecar shares its pod's.
    let port = 8080;
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port 8080 on loopback is taken: the container test needs it"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    // Delivered from outside the container to the broker outside it, then drained on SIGTERM.
    run_sidecar(
        &cleanup.image,
        &cleanup.names[0],
        &cleanup.volume,
        &kafka.bootstrap(),
        port,
    );
    wait_healthy(&cleanup.names[0], port).await;
    let mut acked = Vec::new();
    for n in 0..20 {
        let id = format!("c-{n}");
        post_ok(addr, &event(TOPIC, &id, "tenant-c", n)).await;
        acked.push(id);
    }
    assert_eq!(stop(&cleanup.names[0]), 0, "drained and exited 0");

    // Stored while the broker is away, the container stopped (exit 3: events left), a new
    // container on the same volume delivers them.
    run_sidecar(
        &cleanup.image,
        &cleanup.names[1],
        &cleanup.volume,
        "127.0.0.1:9",
        port,
    );
    wait_healthy(&cleanup.names[1], port).await;
    for n in 20..25 {
        let id = format!("c-{n}");
        post_ok(addr, &event(TOPIC, &id, "tenant-c", n)).await;
        acked.push(id);
    }
    assert_eq!(
        stop(&cleanup.names[1]),
        3,
        "the drain's deadline passed with events left"
    );
    run_sidecar(
        &cleanup.image,
        &cleanup.names[2],
        &cleanup.volume,
        &kafka.bootstrap(),
        port,
    );
    wait_healthy(&cleanup.names[2], port).await;
    assert_eq!(stop(&cleanup.names[2]), 0);
    let consumed = assert_all_delivered(&kafka.bootstrap(), TOPIC, &acked).await;
    assert_eq!(consumed.len(), acked.len(), "each event once");
}
