//! Operator commands that talk to a running sidecar's admin API: `status` (a human summary or
//! JSON) and `dlq` (list, show, replay and purge parked events). They only read and print; the
//! sidecar does the work, so the same checks apply as for any API client.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::Duration;

fn client() -> anyhow::Result<reqwest::Client> {
    client_with(None)
}

/// A client that sends `token` as a bearer token with every request.
fn client_with(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the admin token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()?)
}

/// Sends a request and returns the JSON body of a success, or fails with the problem's detail.
async fn call(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let response = request
        .send()
        .await
        .with_context(|| format!("{what}: no answer"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or(text);
        bail!("{what}: {status}: {detail}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => humantime::format_duration(Duration::from_secs(ms / 1000)).to_string(),
    }
}

/// How many tenants hold backlog, and the largest three.
fn tenants_line(tenants: &serde_json::Value) -> String {
    let largest: Vec<String> = (tenants["largest"].as_array().into_iter().flatten())
        .take(3)
        .map(|t| {
            let name = match t["tenant"].as_str() {
                Some("") | None => crate::metrics::UNTRACKED_TENANTS,
                Some(name) => name,
            };
            format!("{name} {}", t["events"])
        })
        .collect();
    match largest.is_empty() {
        true => format!("{} with backlog", tenants["with_backlog"]),
        false => format!(
            "{} with backlog; largest: {}",
            tenants["with_backlog"],
            largest.join(", ")
        ),
    }
}

/// `edge-outbox status`.
pub async fn status(url: &str, json: bool) -> anyhow::Result<()> {
    let s = call(client()?.get(format!("{url}/v1/status")), "status").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", render_status(&s));
    Ok(())
}

/// `status --watch`: the status again every `interval` until interrupted, the screen cleared
/// first when standard output is a terminal (as `watch` and `kubectl get -w` users expect);
/// with `json`, one JSON object per line. A sidecar that does not answer (restarting, say) is
/// reported on its line and asked again.
pub async fn watch_status(url: &str, json: bool, interval: Duration) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    anyhow::ensure!(!interval.is_zero(), "--interval must be longer than zero");
    let client = client()?;
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let answer = call(client.get(format!("{url}/v1/status")), "status").await;
        let mut out = String::new();
        if terminal {
            out.push_str("\x1b[2J\x1b[H");
        }
        match (answer, json) {
            (Ok(s), true) => out += &format!("{}\n", serde_json::to_string(&s)?),
            (Ok(s), false) => {
                out += &format!("{url} every {}\n", humantime::format_duration(interval));
                out += &render_status(&s);
                out.push('\n');
            }
            (Err(e), true) => out += &format!("{}\n", json!({ "error": format!("{e:#}") })),
            (Err(e), false) => out += &format!("{url}: {e:#}\n\n"),
        }
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (a closed pipe): nothing more to show.
            return Ok(());
        }
    }
}

/// The status as `edge-outbox status` prints it.
fn render_status(s: &Value) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let store = &s["store"];
    let relay = &s["relay"];
    let now_ms = crate::clock::now_ms();
    let last_delivery = relay["last_delivery_ms"]
        .as_u64()
        .map(|t| format!("{} ago", age(Some(now_ms.saturating_sub(t)))))
        .unwrap_or_else(|| "never".into());
    let rows = [
        ("version", s["version"].to_string()),
        (
            "uptime",
            age(s["uptime_seconds"].as_u64().map(|s| s * 1000)),
        ),
        ("store writable", s["writable"].to_string()),
        (
            "backlog",
            format!(
                "{} events, {} bytes",
                store["backlog_events"], store["backlog_bytes"]
            ),
        ),
        ("oldest undelivered", age(s["oldest_age_ms"].as_u64())),
        (
            "cursor / next seq",
            format!("{} / {}", store["cursor"], store["next_seq"]),
        ),
        ("tenants", tenants_line(&s["tenants"])),
        ("dead letters", store["dead_letters"].to_string()),
        ("disk use", format!("{} bytes", s["disk_bytes"])),
        ("last delivery", last_delivery),
        (
            "delivered",
            format!(
                "{} events in {} batches",
                relay["delivered_events"], relay["batches"]
            ),
        ),
    ];
    for (name, value) in rows {
        line(format!("{name:<20} {value}"));
    }
    let failure = &s["broker"]["failure"];
    if failure.is_object() {
        let since = now_ms.saturating_sub(failure["since_ms"].as_u64().unwrap_or(now_ms));
        let what = match failure["kind"].as_str() {
            Some("authentication") => "refusing authentication",
            _ => "unreachable",
        };
        line(format!(
            "{:<20} {what} for {} ({} errors): {}",
            "kafka",
            age(Some(since)),
            failure["count"],
            failure["message"].as_str().unwrap_or_default()
        ));
    } else {
        line(format!("{:<20} reachable", "kafka"));
    }
    if let Some(phase) = s["shutdown"]["phase"].as_str() {
        let shutdown = &s["shutdown"];
        line(format!(
            "{:<20} {phase}: {} events left, deadline in {}",
            "shutdown",
            shutdown["events_left"],
            age(shutdown["deadline_in_ms"].as_u64())
        ));
    }
    if let Some(paused) = relay["paused_topics"].as_object().filter(|m| !m.is_empty()) {
        line("paused topics:".into());
        for (topic, reason) in paused {
            line(format!(
                "  {topic}: {}",
                reason.as_str().unwrap_or_default()
            ));
        }
    }
    if let Some(errors) = relay["last_errors"].as_object().filter(|m| !m.is_empty()) {
        line("last errors:".into());
        for (class, e) in errors {
            let ago = now_ms.saturating_sub(e["at_ms"].as_u64().unwrap_or(now_ms));
            line(format!(
                "  {class:<14} {} ago: {}",
                age(Some(ago)),
                e["message"].as_str().unwrap_or_default()
            ));
        }
    }
    out
}

/// What to do with the dead-letter table.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqAction {
    /// List parked events.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one parked event.
    Show { seq: u64 },
    /// Put parked events back at the end of the outbox.
    Replay {
        seq: Option<u64>,
        #[arg(long, conflicts_with = "seq")]
        all: bool,
    },
    /// Delete parked events.
    Purge {
        seq: Option<u64>,
        #[arg(long, conflicts_with = "seq")]
        all: bool,
    },
}

async fn all_seqs(url: &str) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let mut from = 0;
    loop {
        let page = call(
            client()?.get(format!("{url}/v1/dlq?from={from}&limit=1000")),
            "listing dead letters",
        )
        .await?;
        let page: Vec<u64> = page
            .as_array()
            .map(|a| a.iter().filter_map(|d| d["seq"].as_u64()).collect())
            .unwrap_or_default();
        match page.last() {
            Some(last) => from = last + 1,
            None => return Ok(seqs),
        }
        seqs.extend(page);
    }
}

fn targets(seq: Option<u64>, all: bool, verb: &str) -> anyhow::Result<Option<u64>> {
    match (seq, all) {
        (Some(seq), _) => Ok(Some(seq)),
        (None, true) => Ok(None),
        (None, false) => bail!("dlq {verb}: name a sequence number or give --all"),
    }
}

/// `edge-outbox dlq ...`.
pub async fn dlq(url: &str, token: Option<&str>, action: DlqAction) -> anyhow::Result<()> {
    let http = client_with(token)?;
    match action {
        DlqAction::List { json } => {
            let list = call(
                http.get(format!("{url}/v1/dlq?limit=10000")),
                "listing dead letters",
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let entries = list.as_array().cloned().unwrap_or_default();
            println!("{:<10} {:<50} {:<40} ERROR", "SEQ", "TYPE", "ID");
            for d in &entries {
                println!(
                    "{:<10} {:<50} {:<40} {}",
                    d["seq"],
                    d["event_type"].as_str().unwrap_or("(corrupt)"),
                    d["event_id"].as_str().unwrap_or("-"),
                    d["error"].as_str().unwrap_or_default()
                );
            }
            println!("{} dead letters", entries.len());
        }
        DlqAction::Show { seq } => {
            let d = call(
                http.get(format!("{url}/v1/dlq/{seq}")),
                &format!("dead letter {seq}"),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        DlqAction::Replay { seq, all } => {
            let seqs = match targets(seq, all, "replay")? {
                Some(seq) => vec![seq],
                None => all_seqs(url).await?,
            };
            for seq in &seqs {
                let r = call(
                    http.post(format!("{url}/v1/dlq/{seq}/replay")),
                    &format!("replaying {seq}"),
                )
                .await?;
                println!("replayed {seq} as {}", r["new_seq"]);
            }
            println!("{} replayed", seqs.len());
        }
        DlqAction::Purge { seq, all } => {
            let seqs = match targets(seq, all, "purge")? {
                Some(seq) => vec![seq],
                None => all_seqs(url).await?,
            };
            for seq in &seqs {
                call(
                    http.delete(format!("{url}/v1/dlq/{seq}")),
                    &format!("purging {seq}"),
                )
                .await?;
                println!("purged {seq}");
            }
            println!("{} purged", seqs.len());
        }
    }
    Ok(())
}
