//! The outbox inside a Rust service (`edge_outbox::embedded`), against the embedded broker:
//! appends a few events (each durable when its future resolves), waits until the relay has
//! delivered them, reads them back from the broker, and shuts down.
//!
//! `cargo run --example embedded`

use edge_outbox::catalog::Catalog;
use edge_outbox::embedded::{Event, Outbox};
use edge_outbox::kafka_client::DevBroker;
use edge_outbox::Config;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let broker = DevBroker::start(1, &Catalog::builtin().topics(), 3)?;
    let dir = std::env::temp_dir().join(format!("edge-outbox-embedded-{}", std::process::id()));
    let mut config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    config.kafka.brokers = broker.bootstrap_servers();
    config.relay.flush_interval = Duration::from_millis(200);
    let outbox = Outbox::open(config).await?;

    let events: Vec<Event> = (0..5)
        .map(|n| {
            Event::new(
                format!("evt-{n}"),
                "embedded-example",
                "eventzr.integration-hub.sync.completed.v1",
            )
            .json(serde_json::json!({"tenantId": format!("tenant-{}", n % 2), "n": n}))
        })
        .collect();
    let appended = outbox.append_all(events).await?;
    println!(
        "appended (durable): sequences {:?}",
        appended.iter().map(|a| a.seq).collect::<Vec<_>>()
    );
    let repeat = outbox
        .append(
            Event::new(
                "evt-0",
                "embedded-example",
                "eventzr.integration-hub.sync.completed.v1",
            )
            .json(serde_json::json!({"tenantId": "tenant-0", "n": 0})),
        )
        .await?;
    println!(
        "the same source + id again: seq {} (duplicate: {})",
        repeat.seq, repeat.duplicate
    );
    match outbox
        .append(Event::new(
            "evt-x",
            "embedded-example",
            "not.in.the.catalogue",
        ))
        .await
    {
        Err(e) => println!("refused: {e}"),
        Ok(_) => anyhow::bail!("an unknown type was taken"),
    }

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while outbox.backlog().delivered < 5 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not delivered in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("delivered: {:?}", outbox.backlog());
    let left = outbox.shutdown(Duration::from_secs(5)).await?;
    println!("left in the store at shutdown: {} events", left.events);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
