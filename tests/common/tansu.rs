//! A real, separately started Kafka-compatible broker for the end-to-end tests: tansu 0.6.0
//! (installed by `scripts/install-test-deps`), on a free loopback port, with sqlite storage in
//! a temporary directory. It is killed when dropped, also when a test fails.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    dir: Option<tempfile::TempDir>,
}

/// The tansu binary: `$TANSU_BIN`, else `tansu` on the PATH, else `~/.cargo/bin/tansu`.
fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let on_path = Command::new("tansu")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return PathBuf::from("tansu");
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/tansu");
    assert!(
        cargo_bin.exists(),
        "the end-to-end tests need the Kafka-compatible broker tansu 0.6.0: run \
         scripts/install-test-deps (cargo install tansu --locked --version 0.6.0 --features libsql)"
    );
    cargo_bin
}

impl Tansu {
    pub fn start() -> Tansu {
        let mut tansu = Tansu {
            child: None,
            port: super::free_port(),
            dir: Some(tempfile::tempdir().unwrap()),
        };
        tansu.spawn();
        tansu
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().as_path().join("tansu.log"))
            .unwrap();
        let child = Command::new(binary())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir().as_path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none(),
                "tansu exited at start: {exited:?}; see {}",
                self.log()
            );
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the broker")
            .path()
            .to_path_buf()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().as_path().join("tansu.log")).unwrap_or_default()
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Creates topics with the sidecar's own `topics create` command.
    pub fn create_topics(&self, topics: &[String], partitions: u32) {
        let output = Command::new(env!("CARGO_BIN_EXE_edge-outbox"))
            .args(["topics", "create", "--brokers", &self.bootstrap()])
            .args([
                "--partitions",
                &partitions.to_string(),
                "--replication",
                "-1",
            ])
            .args(topics)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "topics create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "tansu's storage and log kept for inspection in {}",
                    dir.keep().display()
                );
            }
        }
    }
}
