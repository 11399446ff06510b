//! Apache Kafka itself for the end-to-end tests: a KRaft cluster on loopback (one combined
//! broker+controller, or several for the failover tests) started from the jars that
//! `scripts/install-test-deps` fetches from Maven Central (`tests/kafka/pom.xml`). Free ports,
//! data and logs in a temporary directory (kept when a test fails), readiness awaited with a
//! real metadata request, every node killed on drop.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Kafka version `tests/kafka/pom.xml` pins.
pub const KAFKA_VERSION: &str = "4.1.1";

/// The folder of Kafka's jars: `$KAFKA_LIBS`, else the cache folder install-test-deps fills.
pub fn libs() -> PathBuf {
    if let Ok(path) = std::env::var("KAFKA_LIBS") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let libs = PathBuf::from(home).join(format!(".cache/edge-outbox/kafka-{KAFKA_VERSION}/libs"));
    assert!(
        libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"))
            .exists(),
        "the end-to-end tests need Apache Kafka {KAFKA_VERSION}'s jars in {}: run \
         scripts/install-test-deps (Maven fetches them from Maven Central)",
        libs.display()
    );
    libs
}

/// Runs `command` and insists that it succeeds; on failure the message names `what` and shows
/// both of its outputs.
fn run_ok(command: &mut Command, what: &str) -> std::process::Output {
    let output = command.output().unwrap_or_else(|e| {
        panic!("{what} does not start ({e}): scripts/install-test-deps installs it")
    });
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

struct Node {
    id: u32,
    port: u16,
    controller_port: u16,
    /// A SASL_PLAINTEXT listener (PLAIN), when the cluster has users.
    sasl_port: u16,
    /// TLS listeners, when the cluster has TLS: server-authenticated, mutual, and SASL/SCRAM-
    /// SHA-512 over TLS (with the users).
    ssl_port: u16,
    mtls_port: u16,
    sasl_ssl_port: u16,
    /// SASL_SSL with OAUTHBEARER checked as MSK IAM, when the cluster has an [`Iam`].
    iam_port: u16,
    /// PLAINTEXT advertised at 10.0.2.2, when the cluster is for containers.
    container_port: u16,
    child: Option<Child>,
}

/// The credentials and region an MSK IAM listener accepts tokens of (checked by
/// `tests/kafka/MskIamValidator.java` on the broker).
#[derive(Clone, Debug)]
pub struct Iam {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// A running Apache Kafka cluster.
pub struct Kafka {
    nodes: Vec<Node>,
    /// SASL users (name, password): PLAIN on SASL_PLAINTEXT, SCRAM-SHA-512 on SASL_SSL; none:
    /// no SASL listener.
    users: Vec<(String, String)>,
    /// TLS listeners, with a CA, broker and client certificates made for the cluster.
    tls: bool,
    iam: Option<Iam>,
    /// A listener for containers (see [`Kafka::for_containers`]).
    containers: bool,
    dir: Option<tempfile::TempDir>,
}

/// The listeners a cluster has besides PLAINTEXT on loopback.
#[derive(Default)]
struct Options {
    users: Vec<(String, String)>,
    tls: bool,
    iam: Option<Iam>,
    containers: bool,
}

impl Options {
    fn users(users: &[(&str, &str)]) -> Options {
        Options {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            ..Options::default()
        }
    }
}

impl Kafka {
    /// One combined broker and controller: most tests.
    pub fn start() -> Kafka {
        Kafka::cluster(1)
    }

    /// `n` combined brokers and controllers; with 3, topics default to replication 3 and
    /// `min.insync.replicas=2`, as on MSK.
    pub fn cluster(n: u32) -> Kafka {
        Kafka::build(n, Options::default())
    }

    /// A cluster with a second listener, SASL_PLAINTEXT with PLAIN, that knows these users.
    pub fn with_users(n: u32, users: &[(&str, &str)]) -> Kafka {
        Kafka::build(n, Options::users(users))
    }

    /// One broker with TLS listeners too (see [`Kafka::ssl_bootstrap`] and the others), and
    /// SCRAM-SHA-512 users over TLS.
    pub fn secured(users: &[(&str, &str)]) -> Kafka {
        Kafka::build(
            1,
            Options {
                tls: true,
                ..Options::users(users)
            },
        )
    }

    /// One broker with the TLS listeners and an MSK IAM listener ([`Kafka::iam_bootstrap`])
    /// that accepts tokens signed with `iam`'s credentials for its region, and makes clients
    /// authenticate again every 10 s (so that a refreshed token is checked too).
    pub fn with_iam(iam: Iam) -> Kafka {
        Kafka::build(
            1,
            Options {
                tls: true,
                iam: Some(iam),
                ..Options::default()
            },
        )
    }

    /// One broker with a second plaintext listener for containers on a slirp4netns network
    /// with `allow_host_loopback` ([`Kafka::container_bootstrap`]): bound on the host's
    /// loopback, advertised at 10.0.2.2, the address such a container reaches it by.
    pub fn for_containers() -> Kafka {
        Kafka::build(
            1,
            Options {
                containers: true,
                ..Options::default()
            },
        )
    }

    fn build(n: u32, options: Options) -> Kafka {
        let mut kafka = Kafka {
            nodes: (1..=n)
                .map(|id| Node {
                    id,
                    port: super::free_port(),
                    controller_port: super::free_port(),
                    sasl_port: super::free_port(),
                    ssl_port: super::free_port(),
                    mtls_port: super::free_port(),
                    sasl_ssl_port: super::free_port(),
                    iam_port: super::free_port(),
                    container_port: super::free_port(),
                    child: None,
                })
                .collect(),
            users: options.users,
            tls: options.tls,
            iam: options.iam,
            containers: options.containers,
            dir: Some(tempfile::tempdir().unwrap()),
        };
        if kafka.tls {
            kafka.make_certificates();
        }
        if kafka.iam.is_some() {
            kafka.compile_java("MskIamValidator.java");
        }
        kafka.format();
        for i in 0..kafka.nodes.len() {
            kafka.spawn(i);
        }
        kafka.await_ready();
        kafka
    }

    /// A CA, a broker certificate for 127.0.0.1 and localhost, a client certificate, all signed
    /// by that CA, and a second CA nobody trusts: PEM files under `tls/`.
    fn make_certificates(&self) {
        let tls = self.tls_dir();
        std::fs::create_dir_all(&tls).unwrap();
        let openssl = |args: &[&str]| {
            run_ok(
                Command::new("openssl").args(args).current_dir(&tls),
                &format!("openssl {args:?}"),
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=edge-outbox test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        std::fs::write(
            tls.join("broker.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        for (name, ext) in [("broker", Some("broker.ext")), ("client", None)] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            let mut sign = vec![
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.crt"),
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
            if let Some(ext) = ext {
                sign.extend(["-extfile".to_string(), ext.to_string()]);
            }
            openssl(&sign.iter().map(String::as_str).collect::<Vec<_>>());
        }
        // Kafka's PEM key store: the private key, then the certificate chain, in one file.
        let key = std::fs::read_to_string(tls.join("broker.key")).unwrap();
        let cert = std::fs::read_to_string(tls.join("broker.crt")).unwrap();
        std::fs::write(tls.join("broker-keystore.pem"), format!("{key}{cert}")).unwrap();
    }

    /// The folder of the cluster's PEM files.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir().join("tls")
    }

    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the cluster")
            .path()
            .to_path_buf()
    }

    fn properties_path(&self, id: u32) -> PathBuf {
        self.dir().join(format!("node-{id}.properties"))
    }

    fn log_path(&self, id: u32) -> PathBuf {
        self.dir().join(format!("node-{id}.log"))
    }

    /// Writes each node's properties and formats its storage with one cluster id.
    fn format(&self) {
        let voters: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect();
        let replication = self.nodes.len().min(3);
        let min_isr = if replication >= 3 { 2 } else { 1 };
        std::fs::write(
            self.dir().join("log4j2.yaml"),
            "Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n      PatternLayout:\n        \
             pattern: \"[%d] %p %m (%c)%n\"\n  Loggers:\n    Root:\n      level: WARN\n      \
             AppenderRef:\n        - ref: STDOUT\n",
        )
        .unwrap();
        for node in &self.nodes {
            let properties = format!(
                "process.roles=broker,controller\n\
                 node.id={id}\n\
                 controller.quorum.voters={voters}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={dir}/data-{id}\n\
                 num.partitions=3\n\
                 default.replication.factor={replication}\n\
                 min.insync.replicas={min_isr}\n\
                 offsets.topic.replication.factor={replication}\n\
                 transaction.state.log.replication.factor={replication}\n\
                 transaction.state.log.min.isr={min_isr}\n\
                 group.initial.rebalance.delay.ms=0\n\
                 auto.create.topics.enable=false\n\
                 log.flush.interval.messages=9223372036854775807\n",
                id = node.id,
                voters = voters.join(","),
                port = node.port,
                cport = node.controller_port,
                dir = self.dir().display(),
            );
            let mut properties = properties;
            let mut listeners = vec![format!("PLAINTEXT://127.0.0.1:{}", node.port)];
            let mut map = vec!["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"];
            if !self.users.is_empty() {
                listeners.push(format!("SASL_PLAINTEXT://127.0.0.1:{}", node.sasl_port));
                map.push("SASL_PLAINTEXT:SASL_PLAINTEXT");
                let users: String = self
                    .users
                    .iter()
                    .map(|(u, p)| format!(" user_{u}=\"{p}\""))
                    .collect();
                properties.push_str(&format!(
                    "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN\n\
                     listener.name.sasl_plaintext.plain.sasl.jaas.config=\
                     org.apache.kafka.common.security.plain.PlainLoginModule required{users};\n"
                ));
            }
            if self.tls {
                listeners.push(format!("SSL://127.0.0.1:{}", node.ssl_port));
                listeners.push(format!("MTLS://127.0.0.1:{}", node.mtls_port));
                listeners.push(format!("SASL_SSL://127.0.0.1:{}", node.sasl_ssl_port));
                map.extend(["SSL:SSL", "MTLS:SSL", "SASL_SSL:SASL_SSL"]);
                let tls = self.tls_dir();
                properties.push_str(&format!(
                    "ssl.keystore.type=PEM\n\
                     ssl.keystore.location={keystore}\n\
                     ssl.truststore.type=PEM\n\
                     ssl.truststore.location={ca}\n\
                     listener.name.mtls.ssl.client.auth=required\n\
                     listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                     listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
                     org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
                    keystore = tls.join("broker-keystore.pem").display(),
                    ca = tls.join("ca.pem").display(),
                ));
            }
            if let Some(iam) = &self.iam {
                listeners.push(format!("IAM://127.0.0.1:{}", node.iam_port));
                map.push("IAM:SASL_SSL");
                properties.push_str(&format!(
                    "listener.name.iam.sasl.enabled.mechanisms=OAUTHBEARER\n\
                     listener.name.iam.oauthbearer.sasl.server.callback.handler.class=MskIamValidator\n\
                     listener.name.iam.oauthbearer.sasl.jaas.config=\
                     org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required \
                     unsecuredLoginStringClaim_sub=\"broker\" \
                     accessKeyId=\"{}\" secretAccessKey=\"{}\" region=\"{}\";\n\
                     listener.name.iam.oauthbearer.connections.max.reauth.ms=10000\n",
                    iam.access_key_id, iam.secret_access_key, iam.region
                ));
            }
            let mut advertised = listeners.clone();
            if self.containers {
                listeners.push(format!("CONTAINERS://127.0.0.1:{}", node.container_port));
                advertised.push(format!("CONTAINERS://10.0.2.2:{}", node.container_port));
                map.push("CONTAINERS:PLAINTEXT");
            }
            let plain = format!("PLAINTEXT://127.0.0.1:{}", node.port);
            properties = properties
                .replace(
                    &format!("listeners={plain},"),
                    &format!("listeners={},", listeners.join(",")),
                )
                .replace(
                    &format!("advertised.listeners={plain}\n"),
                    &format!("advertised.listeners={}\n", advertised.join(",")),
                )
                .replace(
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    &format!("listener.security.protocol.map={}", map.join(",")),
                );
            std::fs::write(self.properties_path(node.id), properties).unwrap();
            let mut format = self.java();
            format
                .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
                .args(["--cluster-id", "ZWRnZS1vdXRib3gtdGVzdA"])
                .args(self.users.iter().filter(|_| self.tls).flat_map(|(u, p)| {
                    [
                        "--add-scram".to_string(),
                        format!("SCRAM-SHA-512=[name={u},password=\"{p}\"]"),
                    ]
                }))
                .arg("--config")
                .arg(self.properties_path(node.id));
            run_ok(&mut format, "formatting Kafka's storage (java)");
        }
    }

    fn spawn(&mut self, index: usize) {
        let id = self.nodes[index].id;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .unwrap();
        let child = self
            .java()
            .args([
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ])
            .arg("kafka.Kafka")
            .arg(self.properties_path(id))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("java starts Kafka");
        self.nodes[index].child = Some(child);
    }

    /// Waits until every node answers a metadata request and lists every broker; prints how
    /// long that took and each node's resident memory (shown with `--nocapture`).
    fn await_ready(&mut self) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(90);
        for index in 0..self.nodes.len() {
            let bootstrap = format!("127.0.0.1:{}", self.nodes[index].port);
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
            loop {
                let exited = self.nodes[index]
                    .child
                    .as_mut()
                    .unwrap()
                    .try_wait()
                    .unwrap();
                assert!(
                    exited.is_none(),
                    "Kafka node {} exited at start: {exited:?}; see {}",
                    self.nodes[index].id,
                    self.log_path(self.nodes[index].id).display()
                );
                let ready = consumer
                    .fetch_metadata(None, Duration::from_secs(1))
                    .is_ok_and(|m| m.brokers().len() == self.nodes.len());
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Kafka did not become ready; see {}",
                    self.log_path(self.nodes[index].id).display()
                );
            }
        }
        let rss: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.child.as_ref())
            .map(|c| {
                std::fs::read_to_string(format!("/proc/{}/status", c.id()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
                    })
                    .map(|kb| format!("{} MiB", kb.parse::<u64>().unwrap_or(0) / 1024))
                    .unwrap_or_default()
            })
            .collect();
        eprintln!(
            "Apache Kafka {KAFKA_VERSION}: {} node(s) ready in {:.1} s, resident {}",
            self.nodes.len(),
            started.elapsed().as_secs_f64(),
            rss.join(", ")
        );
    }

    /// The bootstrap list of every node.
    pub fn bootstrap(&self) -> String {
        self.listener(|n| n.port)
    }

    /// The bootstrap list of the SASL_PLAINTEXT (PLAIN) listeners.
    pub fn sasl_bootstrap(&self) -> String {
        assert!(!self.users.is_empty(), "a cluster made with users");
        self.listener(|n| n.sasl_port)
    }

    /// The TLS listeners' bootstrap lists: server-authenticated, mutual (a client certificate
    /// signed by the cluster's CA required), and SASL/SCRAM-SHA-512 over TLS.
    pub fn ssl_bootstrap(&self) -> String {
        assert!(self.tls, "a cluster made with Kafka::secured");
        self.listener(|n| n.ssl_port)
    }

    pub fn mtls_bootstrap(&self) -> String {
        assert!(self.tls, "a cluster made with Kafka::secured");
        self.listener(|n| n.mtls_port)
    }

    pub fn sasl_ssl_bootstrap(&self) -> String {
        assert!(self.tls, "a cluster made with Kafka::secured");
        self.listener(|n| n.sasl_ssl_port)
    }

    /// The MSK IAM listener's bootstrap list (SASL_SSL, OAUTHBEARER).
    pub fn iam_bootstrap(&self) -> String {
        assert!(self.iam.is_some(), "a cluster made with Kafka::with_iam");
        self.listener(|n| n.iam_port)
    }

    /// The bootstrap list containers on a slirp4netns network reach the cluster by.
    pub fn container_bootstrap(&self) -> String {
        assert!(self.containers, "a cluster made with Kafka::for_containers");
        self.nodes
            .iter()
            .map(|n| format!("10.0.2.2:{}", n.container_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `127.0.0.1:PORT` of every node, for the listener `port` picks.
    fn listener(&self, port: impl Fn(&Node) -> u16) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", port(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The bootstrap address of one node (by id, from 1).
    pub fn node_bootstrap(&self, id: u32) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node of this cluster");
        format!("127.0.0.1:{}", node.port)
    }

    fn index_of(&self, id: u32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("a node of this cluster")
    }

    /// The node id leading `topic`'s `partition`, as the cluster's metadata says.
    pub fn leader_of(&self, topic: &str, partition: i32) -> u32 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let leader = metadata.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .expect("the partition exists")
            .leader();
        leader as u32
    }

    /// SIGKILL one node.
    pub fn kill_node(&mut self, id: u32) {
        let index = self.index_of(id);
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts one killed node again on its ports and storage (not awaited: the others serve).
    pub fn start_node(&mut self, id: u32) {
        let index = self.index_of(id);
        assert!(self.nodes[index].child.is_none(), "node {id} runs");
        self.spawn(index);
    }

    /// SIGSTOP (`"STOP"`) or SIGCONT (`"CONT"`) one node: a broker that hangs, then resumes.
    pub fn signal_node(&self, id: u32, signal: &str) {
        let index = self.index_of(id);
        let pid = self.nodes[index].child.as_ref().expect("running").id();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// SIGKILL every node.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts every node again on the same ports and storage, and waits until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        self.await_ready();
    }

    /// `java` with the broker's jars and the compiled test classes on the class path and the
    /// cluster's quiet log4j settings, ready for a main class and its arguments.
    fn java(&self) -> Command {
        let mut java = Command::new("java");
        java.arg("-cp")
            .arg(format!(
                "{}:{}",
                libs().join("*").display(),
                self.classes_dir().display()
            ))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir().join("log4j2.yaml").display()
            ));
        java
    }

    fn classes_dir(&self) -> PathBuf {
        self.dir().join("java-classes")
    }

    /// Compiles `tests/kafka/FILE` against the broker's jars into the cluster's class folder.
    fn compile_java(&self, file: &str) {
        let classes = self.classes_dir();
        std::fs::create_dir_all(&classes).unwrap();
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/kafka")
            .join(file);
        let mut javac = Command::new("javac");
        javac
            .arg("-cp")
            .arg(libs().join("*"))
            .arg("-d")
            .arg(&classes)
            .arg(source);
        run_ok(&mut javac, &format!("javac {file} (Java 17)"));
    }

    /// The partition Kafka's own Java producer (kafka-clients, default partitioner) picks for
    /// each key, sending one record per key to `topic`: `tests/kafka/JavaPartitions.java`,
    /// compiled here with the broker's jars.
    pub fn java_partitions(&self, topic: &str, keys: &[String]) -> HashMap<String, i32> {
        self.compile_java("JavaPartitions.java");
        let mut java = self.java();
        java.args(["JavaPartitions", &self.bootstrap(), topic])
            .args(keys);
        let output = run_ok(&mut java, "the Java producer");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let (key, partition) = line.split_once('\t').expect("key<TAB>partition");
                (key.to_string(), partition.parse().unwrap())
            })
            .collect()
    }

    /// Creates a topic with topic-level settings (`max.message.bytes`, ...) through the admin API.
    pub fn create_topic_with(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let replication = self.nodes.len().min(3) as i32;
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        for (key, value) in configs {
            new = new.set(key, value);
        }
        // On a thread of its own with a runtime of its own: callers may be async tests.
        let results = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(admin.create_topics(&[new], &AdminOptions::new()))
                })
                .join()
                .unwrap()
        })
        .unwrap();
        assert!(results[0].is_ok(), "creating {topic}: {results:?}");
        self.await_topic(topic, partitions);
    }

    /// Waits until every broker's metadata shows `topic` with its partitions led (the admin
    /// call answers before the brokers' metadata caches have it).
    fn await_topic(&self, topic: &str, partitions: i32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", format!("127.0.0.1:{}", node.port))
                .create()
                .unwrap();
            loop {
                let led = (consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .ok())
                .and_then(|m| {
                    let t = m.topics().iter().find(|t| t.name() == topic)?;
                    let led = t.partitions().iter().filter(|p| p.leader() >= 0).count();
                    Some(t.error().is_none() && led == partitions as usize)
                })
                .unwrap_or(false);
                if led {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{topic} not in node {}'s metadata after 30 s",
                    node.id
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Runs Kafka's own `kafka-configs` (`kafka.admin.ConfigCommand`) with `args`, such as a
    /// client quota: `--alter --add-config producer_byte_rate=N --entity-type clients
    /// --entity-default`.
    pub fn configs(&self, args: &[&str]) -> String {
        let mut configs = self.java();
        configs
            .args([
                "kafka.admin.ConfigCommand",
                "--bootstrap-server",
                &self.bootstrap(),
            ])
            .args(args);
        let output = run_ok(&mut configs, &format!("kafka-configs {args:?}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates topics with the sidecar's own `topics create` command.
    pub fn create_topics(&self, topics: &[String], partitions: u32) {
        let mut create = super::cli();
        create
            .args(["topics", "create", "--brokers", &self.bootstrap()])
            .args([
                "--partitions",
                &partitions.to_string(),
                "--replication",
                "-1",
            ])
            .args(topics);
        run_ok(&mut create, "edge-outbox topics create");
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        // A stopped node would not die of SIGKILL until continued on some kernels' views of it.
        for node in &self.nodes {
            if let Some(child) = &node.child {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
        }
        self.kill();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "Kafka's storage and logs kept for inspection in {}",
                    dir.keep().display()
                );
            }
        }
    }
}
