//! The Kubernetes manifests in `packaging/kubernetes/` validate strictly against the
//! Kubernetes schemas (kubernetes-validate, installed by `scripts/install-test-deps`).

use std::process::Command;

#[test]
fn kubernetes_manifests_validate_strictly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "manifests: {files:?}");
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--kubernetes-version", "1.33.0"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate is needed ({e}): run scripts/install-test-deps (pip install kubernetes-validate==1.37.0)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains("No module named"),
        "kubernetes-validate is needed: run scripts/install-test-deps (pip install kubernetes-validate==1.37.0)"
    );
    assert!(output.status.success(), "{text}");
    assert_eq!(text.matches(" passed ").count(), files.len(), "{text}");
}

#[test]
fn the_configmap_holds_a_valid_configuration() {
    let text = std::fs::read_to_string("packaging/kubernetes/configmap.yaml").unwrap();
    let toml: String = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("edge-outbox.toml: |"))
        .skip(1)
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = edge_outbox::config::Config::from_toml(&toml).unwrap();
    config.validate(true).unwrap();
    assert!(config.kafka.security.uses_msk_iam());
    for (name, preset) in edge_outbox::config::PRESETS {
        let config = edge_outbox::config::Config::from_toml(preset).unwrap();
        config
            .validate(true)
            .unwrap_or_else(|e| panic!("preset {name}: {e}"));
    }
}
