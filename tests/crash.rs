//! Crash safety of the real binary against librdkafka's mock cluster (which lives in this
//! test process and so outlives every kill): see `common::crash_loop`.

mod common;

use edge_outbox::catalog::Catalog;
use edge_outbox::kafka_client::DevBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill() {
    let kafka = DevBroker::start(1, &Catalog::builtin().topics(), 3).unwrap();
    let report = common::crash_loop::run(&kafka.bootstrap_servers(), 8, 6, 50).await;
    eprintln!("crash loop against the mock cluster: {report:?}");
}
