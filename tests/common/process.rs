//! The real `edge-outbox` binary as a child process on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SidecarProcess {
    child: Option<Child>,
    pub port: u16,
    config: PathBuf,
    data: PathBuf,
    brokers: String,
    /// Its standard error (log level `info`), appended to across restarts.
    log: PathBuf,
    /// Environment variables it gets (cli() clears EDGE_OUTBOX_* and AWS_* first).
    env: Vec<(String, String)>,
}

impl SidecarProcess {
    /// Starts `edge-outbox serve` and waits until it answers.
    pub async fn start(config: &Path, data: &Path, brokers: &str) -> SidecarProcess {
        SidecarProcess::start_with_env(config, data, brokers, &[]).await
    }

    /// [`SidecarProcess::start`] with these environment variables (AWS credentials, say).
    pub async fn start_with_env(
        config: &Path,
        data: &Path,
        brokers: &str,
        env: &[(&str, &str)],
    ) -> SidecarProcess {
        let mut process = SidecarProcess {
            child: None,
            port: 0,
            config: config.to_path_buf(),
            data: data.to_path_buf(),
            brokers: brokers.to_string(),
            log: data.with_extension("log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        self.port = super::free_port();
        std::fs::create_dir_all(self.log.parent().unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = super::cli()
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--brokers", &self.brokers])
            .arg("--data-dir")
            .arg(&self.data)
            .env(
                "RUST_LOG",
                "info,librdkafka=off,edge_outbox::kafka_client=off",
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status_with(&client).await.is_none() {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none(),
                "the sidecar exited at start: {exited:?}\n{}",
                self.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "the sidecar did not start serving"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    pub async fn status_with(&self, client: &reqwest::Client) -> Option<serde_json::Value> {
        client
            .get(format!("{}/v1/status", self.url()))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    pub async fn status(&self) -> serde_json::Value {
        self.status_with(&reqwest::Client::new())
            .await
            .expect("the sidecar answers /v1/status")
    }

    /// SIGKILL: no chance to flush or answer anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (the backlog drained).
    pub fn terminate(&mut self) {
        let status = self.terminate_and_wait().0;
        assert!(
            status.success(),
            "graceful shutdown exit status {status}\n{}",
            self.log_text()
        );
    }

    /// SIGTERM; waits for the exit and says how long it took.
    pub fn terminate_and_wait(&mut self) -> (std::process::ExitStatus, Duration) {
        self.signal("TERM");
        let started = Instant::now();
        let status = self.child.take().expect("running").wait().unwrap();
        (status, started.elapsed())
    }

    /// SIGTERM, then once the drain shows in `/v1/status` a second SIGTERM: stops at once.
    pub async fn terminate_twice(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status_with(&client).await;
            if status.is_some_and(|s| s["shutdown"]["phase"] == "draining") {
                break;
            }
            assert!(Instant::now() < deadline, "the drain did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal("TERM");
        self.child.take().expect("running").wait().unwrap()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process has exited (it is then reaped).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let exited = self.child.as_mut()?.try_wait().unwrap();
        if exited.is_some() {
            self.child = None;
        }
        exited
    }

    /// Everything the process wrote to standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts again on the same data directory (on a new port).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Waits until the backlog is empty.
    pub async fn wait_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            if status["store"]["backlog_events"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "backlog did not drain: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("sidecar log ({}):\n{}", self.log.display(), self.log_text());
        }
    }
}
