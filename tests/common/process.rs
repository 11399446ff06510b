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
}

impl SidecarProcess {
    /// Starts `edge-outbox serve` and waits until it answers.
    pub async fn start(config: &Path, data: &Path, brokers: &str) -> SidecarProcess {
        let mut process = SidecarProcess {
            child: None,
            port: 0,
            config: config.to_path_buf(),
            data: data.to_path_buf(),
            brokers: brokers.to_string(),
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        self.port = super::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_edge-outbox"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--brokers", &self.brokers])
            .arg("--data-dir")
            .arg(&self.data)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status_with(&client).await.is_none() {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(exited.is_none(), "the sidecar exited at start: {exited:?}");
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

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let status = child.wait().unwrap();
            assert!(status.success(), "graceful shutdown exit status {status}");
        }
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
    }
}
