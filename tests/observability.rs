//! What operators look at: the alerting rules of packaging/prometheus pass `promtool check
//! rules` and their unit tests (`promtool test rules`, Debian's prometheus package, installed by
//! scripts/install-test-deps), and every metric the rules and the Grafana dashboard of
//! packaging/grafana name is one the real binary exports on `/metrics`; the dashboard's queries
//! are valid PromQL (checked by promtool as recording rules).

mod common;

use common::process::SidecarProcess;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(file)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (scripts/install-test-deps installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}: {text}");
    text
}

/// The metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("edge_outbox_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The series names `/metrics` exports: gauges as they are, counters with `_total`,
/// histograms with `_bucket`, `_sum` and `_count` (read from the `# TYPE` lines, so that
/// families without a sample yet count too).
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let dir = packaging("prometheus");
    let checked = promtool(&["check", "rules", "alerts.yaml"], &dir);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yaml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_and_the_dashboard_name_only_metrics_the_binary_exports() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-outbox.toml");
    std::fs::write(&config, "[relay]\npublish_summaries = false\n").unwrap();
    let sidecar = SidecarProcess::start(&config, &dir.path().join("data"), "127.0.0.1:9").await;
    let metrics = reqwest::get(format!("{}/metrics", sidecar.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = exported(&metrics);
    assert!(exported.len() > 20, "{exported:?}");

    let rules = std::fs::read_to_string(packaging("prometheus/alerts.yaml")).unwrap();
    let in_rules = metric_names(&rules);
    assert!(in_rules.len() >= 8, "{in_rules:?}");
    let unknown: Vec<_> = in_rules.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts.yaml names {unknown:?}, not exported"
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(packaging("grafana/edge-outbox.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Backlog (events)",
        "Oldest undelivered event",
        "Ingest rate",
        "Delivery rate by topic",
        "Produce errors by class",
        "fsync latency (group commit)",
        "Disk",
    ] {
        assert!(
            titles.contains(&wanted),
            "no {wanted:?} panel in {titles:?}"
        );
    }
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    let mut in_dashboard = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} names no edge-outbox metric");
        in_dashboard.extend(names);
    }
    let unknown: Vec<_> = in_dashboard.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names {unknown:?}, not exported"
    );

    // The queries as recording rules, Grafana's variables filled in: promtool parses them.
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$namespace", ".*")
            .replace("$pod", ".*");
        recording += &format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        );
    }
    std::fs::write(dir.path().join("dashboard-rules.yaml"), recording).unwrap();
    let checked = promtool(&["check", "rules", "dashboard-rules.yaml"], dir.path());
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{checked}"
    );
}
