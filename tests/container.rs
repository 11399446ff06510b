//! The sidecar's image, built from `packaging/Dockerfile` with podman and run as Kubernetes runs
//! it: non-root (10001), read-only root filesystem, every capability dropped, the store on a
//! volume. Its health check passes; events posted from outside reach Apache Kafka outside it;
//! SIGTERM drains and exits 0; the store survives a container restart on its volume. And the
//! shipped classic-sidecar manifest played as a pod by `podman kube play`, with an app stand-in
//! posting on the pod's loopback, drained by `podman kube down`.
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

/// The container tests one at a time: both need host ports (8080, the pod's published 9090).
static HOST_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why this machine cannot run containers, as scripts/install-test-deps found.
fn unavailable() -> Option<String> {
    std::fs::read_to_string(podman_dir().join("unavailable"))
        .ok()
        .map(|reason| reason.trim().to_string())
}

/// Removes the test's containers, pods, volumes and images, also when it fails.
struct Cleanup {
    images: Vec<String>,
    volumes: Vec<String>,
    names: Vec<String>,
    /// Manifests played with `podman kube play`.
    played: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for manifest in &self.played {
            let _ = podman(&["kube", "down", &manifest.display().to_string()]);
        }
        for name in &self.names {
            let _ = podman(&["rm", "-f", name]);
        }
        for volume in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", volume]);
        }
        for image in &self.images {
            let _ = podman(&["rmi", "-f", image]);
        }
    }
}

/// Builds `packaging/Dockerfile`'s final stage as users do with `BINARY_STAGE=prebuilt`, around
/// this test build's binary (stripped, as the build stage strips its own).
fn build_image(tag: &str) {
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
        tag,
        &context.path().display().to_string(),
    ]);
    eprintln!(
        "image {tag} built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
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
    if let Some(reason) = unavailable() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let _ports = HOST_PORTS.lock().await;
    let id = std::process::id();
    let image = format!("localhost/edge-outbox:test-{id}");
    let volume = format!("edge-outbox-test-{id}");
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| format!("eo-{id}-{n}"))
        .collect();
    let _cleanup = Cleanup {
        images: vec![image.clone()],
        volumes: vec![volume.clone()],
        names: names.clone(),
        played: Vec::new(),
    };
    build_image(&image);
    let inspect: serde_json::Value =
        serde_json::from_str(&podman_ok(&["image", "inspect", &image])).unwrap();
    let built = &inspect[0];
    eprintln!(
        "image size: {} MB (with this test build's stripped binary)",
        built["Size"].as_u64().unwrap() / 1_000_000
    );
    assert_eq!(built["Config"]["User"], "10001");
    assert!(
        built["Config"]["Volumes"]["/var/lib/edge-outbox"].is_object(),
        "{built}"
    );
    assert_eq!(
        built["Config"]["Labels"]["org.opencontainers.image.title"],
        "edge-outbox"
    );
    assert!(
        built["Config"]["Labels"]["org.opencontainers.image.version"].is_string(),
        "{built}"
    );
    assert!(
        built["Healthcheck"]["Test"].to_string().contains("probe"),
        "the docker format keeps HEALTHCHECK: {built}"
    );
    let tools = podman_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &image,
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
    run_sidecar(&image, &names[0], &volume, &kafka.bootstrap(), port);
    wait_healthy(&names[0], port).await;
    let mut acked = Vec::new();
    for n in 0..20 {
        let id = format!("c-{n}");
        post_ok(addr, &event(TOPIC, &id, "tenant-c", n)).await;
        acked.push(id);
    }
    assert_eq!(stop(&names[0]), 0, "drained and exited 0");

    // Stored while the broker is away, the container stopped (exit 3: events left), a new
    // container on the same volume delivers them.
    run_sidecar(&image, &names[1], &volume, "127.0.0.1:9", port);
    wait_healthy(&names[1], port).await;
    for n in 20..25 {
        let id = format!("c-{n}");
        post_ok(addr, &event(TOPIC, &id, "tenant-c", n)).await;
        acked.push(id);
    }
    assert_eq!(
        stop(&names[1]),
        3,
        "the drain's deadline passed with events left"
    );
    run_sidecar(&image, &names[2], &volume, &kafka.bootstrap(), port);
    wait_healthy(&names[2], port).await;
    assert_eq!(stop(&names[2]), 0);
    let consumed = assert_all_delivered(&kafka.bootstrap(), TOPIC, &acked).await;
    assert_eq!(consumed.len(), acked.len(), "each event once");
}

/// The app stand-in of the pod: posts its events to the sidecar at `EVENTS_ENDPOINT` (the pod's
/// loopback), retrying until the sidecar answers, as an app beside a classic sidecar must (both
/// containers start together). On SIGTERM it posts its last events (within the sidecar's
/// `intake_grace`) and waits until the sidecar has gone before it exits: kube play's pods stop
/// as a whole once the app is the last running container, which would cut the drain short.
const APP_SCRIPT: &str = r#"#!/bin/sh
url=${EVENTS_ENDPOINT%/v1/events}
on_term() {
  echo "app: SIGTERM"
  edge-outbox send --url "$url" /app/last-events.json && echo "app: last events posted"
  while edge-outbox probe "$url/healthz" >/dev/null 2>&1; do sleep 0.2; done
  echo "app: the sidecar has gone"
  exit 0
}
trap on_term TERM
until edge-outbox send --url "$url" /app/events.json; do sleep 0.2; done
echo "app: events posted"
while :; do sleep 1 & wait $!; done
"#;

/// `text` with `from` replaced by `to`; panics when the shipped file no longer has `from`.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped manifest no longer has {from:?}: update this test"
    );
    text.replace(from, to)
}

/// A sample of the Prometheus text format, by metric name (no labels).
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_sidecar_manifest_plays_as_a_pod_and_kube_down_drains_it() {
    if let Some(reason) = unavailable() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let _ports = HOST_PORTS.lock().await;
    let ops_port = 9090;
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", ops_port)).is_ok(),
        "port {ops_port} is taken: podman publishes the pod's ops port there"
    );
    let id = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let image = format!("localhost/edge-outbox:kube-{id}");
    let app_image = format!("localhost/edge-outbox-app:kube-{id}");
    let manifest = dir.path().join("deployment.yaml");
    let _cleanup = Cleanup {
        images: vec![app_image.clone(), image.clone()],
        volumes: Vec::new(),
        names: Vec::new(),
        played: vec![manifest.clone()],
    };
    build_image(&image);

    // The app: an image of its own holding the events it posts and the script above.
    let acked: Vec<String> = (0..25).map(|n| format!("kube-{id}-{n}")).collect();
    let events: Vec<serde_json::Value> = acked
        .iter()
        .zip(0..)
        .map(|(event_id, n)| event(TOPIC, event_id, "tenant-kube", n))
        .collect();
    let (first, last) = events.split_at(20);
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("events.json"), serde_json::to_vec(first).unwrap()).unwrap();
    std::fs::write(
        app.join("last-events.json"),
        serde_json::to_vec(last).unwrap(),
    )
    .unwrap();
    std::fs::write(app.join("post-events.sh"), APP_SCRIPT).unwrap();
    std::fs::write(
        app.join("Containerfile"),
        format!(
            "FROM {image}\nCOPY events.json last-events.json post-events.sh /app/\n\
             ENTRYPOINT [\"/bin/sh\", \"/app/post-events.sh\"]\nCMD []\n"
        ),
    )
    .unwrap();
    podman_ok(&[
        "build",
        "--format",
        "docker",
        "-t",
        &app_image,
        &app.display().to_string(),
    ]);

    // Apache Kafka on the host, reached from the pod's slirp4netns network at 10.0.2.2.
    let kafka = Kafka::for_containers();
    kafka.create_topics(&[TOPIC.to_string()], 3);

    // The shipped manifests, changed only where this test or podman 4.3 needs it.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes");
    let mut deployment =
        std::fs::read_to_string(root.join("deployment-classic-sidecar.yaml")).unwrap();
    for (from, to) in [
        // One pod: kube play publishes each pod's containerPorts on the host.
        ("replicas: 2", "replicas: 1".to_string()),
        (
            "image: ghcr.io/eventzr/edge-outbox:0.1.0",
            format!("image: {image}"),
        ),
        (
            "image: ghcr.io/eventzr/integration-hub:latest",
            format!("image: {app_image}"),
        ),
        // podman 4.3 runs an httpGet probe as `curl` inside the container (the image has
        // none) and cannot resolve named ports: the same check with the image's own probe.
        (
            "          livenessProbe:\n            httpGet:\n              path: /healthz\n              port: metrics\n",
            "          livenessProbe:\n            exec:\n              command: [\"edge-outbox\", \"probe\", \"http://127.0.0.1:9090/healthz\"]\n"
                .to_string(),
        ),
    ] {
        deployment = substitute(&deployment, from, &to);
    }
    std::fs::write(&manifest, &deployment).unwrap();
    let mut configmap = std::fs::read_to_string(root.join("configmap.yaml")).unwrap();
    for (from, to) in [
        (
            "brokers = \"b-1.eventzr-msk.ap-south-1.amazonaws.com:9098\"",
            format!("brokers = \"{}\"", kafka.container_bootstrap()),
        ),
        // The test broker's listener for containers is plaintext.
        (
            "    # MSK Serverless: IAM over TLS; credentials from the pod's service account (IRSA).\n    \
             [kafka.security]\n    protocol = \"sasl_ssl\"\n    sasl_mechanism = \"aws_msk_iam\"\n    \
             aws_region = \"ap-south-1\"\n",
            String::new(),
        ),
        // Nothing is sent before `kube down`: what arrives then, the drain delivered.
        ("flush_interval = \"10s\"", "flush_interval = \"1h\"".to_string()),
    ] {
        configmap = substitute(&configmap, from, &to);
    }
    let configmap_file = dir.path().join("configmap.yaml");
    std::fs::write(&configmap_file, &configmap).unwrap();

    podman_ok(&[
        "kube",
        "play",
        "--network",
        "slirp4netns:allow_host_loopback=true",
        "--configmap",
        &configmap_file.display().to_string(),
        &manifest.display().to_string(),
    ]);
    // kube play names a Deployment's pods NAME-pod-N and their containers POD-CONTAINER.
    let pod = "integration-hub-classic-pod-0";
    let sidecar = format!("{pod}-edge-outbox");
    let logs = |name: &str| {
        let output = podman(&["logs", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    // The app's events are stored, read on the ops port as Prometheus reads it.
    let metrics_url = format!("http://127.0.0.1:{ops_port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(90);
    let metrics = loop {
        if let Ok(response) = reqwest::get(&metrics_url).await {
            let text = response.text().await.unwrap_or_default();
            if sample(&text, "edge_outbox_backlog_events") == Some(first.len() as f64) {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the app's events were not stored in time.\nsidecar:\n{}\napp:\n{}",
            logs(&sidecar),
            logs(&format!("{pod}-integration-hub"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metrics.contains("edge_outbox_published_events"),
        "{metrics}"
    );
    // The app saw its 202 (its log line follows the answer, which may come after the store).
    let app = format!("{pod}-integration-hub");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs(&app).contains("app: events posted") {
        assert!(
            Instant::now() < deadline,
            "the app did not report its events posted: {}\n{}",
            logs(&app),
            podman_ok(&["ps", "-a", "--pod"])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = reqwest::get(format!("http://127.0.0.1:{ops_port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready: the broker is reachable");

    // The pod's deletion as kubelet does it: SIGTERM to both containers, SIGKILL after the
    // grace period (terminationGracePeriodSeconds: 30), the pod's network kept until they are
    // gone. Not `kube down` alone: podman before 5.1 SIGKILLs at once there (containers/podman
    // #22397, fixed by #22398), the emptyDir going with the pod. Nor `pod stop`: it stops the
    // infra container with the others, and the slirp4netns network goes before the drain ends.
    let started = Instant::now();
    podman_ok(&["stop", "-t", "30", &sidecar, &app]);
    eprintln!(
        "podman stop of the pod's containers took {:.1} s (intake_grace 5 s, then the drain)",
        started.elapsed().as_secs_f64()
    );
    let exit_code = |name: &str| podman_ok(&["inspect", name, "--format", "{{.State.ExitCode}}"]);
    let log = logs(&sidecar);
    assert_eq!(exit_code(&sidecar), "0", "drained and exited 0: {log}");
    let app_log = logs(&app);
    assert_eq!(
        exit_code(&app),
        "0",
        "the app stopped on SIGTERM: {app_log}"
    );
    assert!(
        app_log.contains("app: last events posted"),
        "posted during the sidecar's intake_grace: {app_log}"
    );
    assert!(
        log.contains("shutting down: delivering the backlog before exiting"),
        "{log}"
    );
    assert!(
        log.contains("drained: every stored event was delivered"),
        "{log}"
    );
    podman_ok(&["kube", "down", &manifest.display().to_string()]);
    let consumed = assert_all_delivered(&kafka.bootstrap(), TOPIC, &acked).await;
    let order: Vec<&String> = consumed.iter().map(|m| &m.headers["ce_id"]).collect();
    assert_eq!(
        order,
        acked.iter().collect::<Vec<_>>(),
        "each event once, in the tenant's order"
    );
}
