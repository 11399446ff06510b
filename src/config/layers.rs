//! Where the configuration comes from, lowest first: the defaults, a file or shipped preset
//! (`--config`, `--preset`), `EDGE_OUTBOX__SECTION__KEY` environment variables, `--set
//! section.key=value`, then the named flags of `serve` (`--listen`, `--brokers`, ...; clap reads
//! a flag's own variable, such as `EDGE_OUTBOX_LISTEN`, only when the flag is absent). Every
//! layer above the file is a list of [`Override`]s applied to the file's TOML, so that an
//! error names the layer that gave the value.

use super::{bad, Config, ConfigError};
use anyhow::{bail, Context};
use std::path::PathBuf;

/// Where the configuration comes from, below the named flags.
#[derive(Debug, Default, Clone)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub preset: Option<String>,
    /// `--set section.key=value` items.
    pub set: Vec<String>,
}

impl ConfigSource {
    /// The configuration of every layer, the named flags' (`flags`) last.
    pub fn load(&self, flags: &[Override]) -> anyhow::Result<Config> {
        let (text, origin) = match (&self.file, &self.preset) {
            (Some(path), _) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                path.display().to_string(),
            ),
            (None, Some(name)) => match preset(name) {
                Some(text) => (text.to_string(), format!("preset {name}")),
                None if std::path::Path::new(name).is_file() => (
                    std::fs::read_to_string(name).with_context(|| format!("reading {name}"))?,
                    name.clone(),
                ),
                None => bail!(
                    "--preset {name:?} is neither a shipped preset ({}) nor a configuration file",
                    PRESETS.map(|(n, _)| n).join(", ")
                ),
            },
            (None, None) => (String::new(), "defaults".to_string()),
        };
        let mut overrides = env_overrides(std::env::vars());
        for item in &self.set {
            let (path, value) = item
                .split_once('=')
                .with_context(|| format!("--set {item:?}: expected PATH=VALUE"))?;
            overrides.push(Override::typed(
                path.trim(),
                value,
                format!("--set {}", path.trim()),
            ));
        }
        overrides.extend_from_slice(flags);
        Ok(Config::from_layers(&text, &origin, &overrides)?)
    }
}

impl Config {
    /// Parses TOML over the defaults, then applies `overrides` in order: each a dotted setting
    /// path (`relay.flush_interval`, `kafka.properties.linger.ms`) and a value. An error names
    /// the layer it comes from: the file (`origin`), or the variable or flag of the override.
    pub(super) fn from_layers(
        text: &str,
        origin: &str,
        overrides: &[Override],
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| bad(origin, e.to_string()))?;
        let read = |table: &toml::Table, layer: &str| {
            toml::Value::Table(table.clone())
                .try_into::<Config>()
                .map_err(|e: toml::de::Error| bad(layer, e.to_string()))
        };
        if overrides.is_empty() {
            return read(&table, origin);
        }
        read(&table, origin)?;
        let mut config = None;
        for o in overrides {
            set_path(&mut table, &o.path, o.value.clone()).map_err(|e| ConfigError {
                setting: format!("{} ({})", e.setting, o.origin),
                ..e
            })?;
            config = Some(read(&table, &o.origin)?);
        }
        Ok(config.expect("at least one override"))
    }
}

/// One setting given outside the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// `section.key`.
    pub path: String,
    pub value: toml::Value,
    /// Where it came from, for errors: `EDGE_OUTBOX__RELAY__FLUSH_INTERVAL`, `--set`, `--listen`.
    pub origin: String,
}

impl Override {
    /// A value as typed in a variable or `--set`: read as TOML when it parses as TOML (`5`,
    /// `true`, `"x"`) and as a string otherwise.
    pub fn typed(path: &str, raw: &str, origin: String) -> Override {
        Override {
            path: path.to_string(),
            value: parse_override(raw),
            origin,
        }
    }

    /// A value that is a string whatever it looks like (a named flag's).
    pub fn string(path: &str, value: impl Into<String>, origin: &str) -> Override {
        Override {
            path: path.to_string(),
            value: toml::Value::String(value.into()),
            origin: origin.to_string(),
        }
    }
}

/// The configuration presets shipped with the binary (`packaging/config/*.toml`).
pub const PRESETS: [(&str, &str); 2] = [
    (
        "staging",
        include_str!("../../packaging/config/staging.toml"),
    ),
    (
        "production",
        include_str!("../../packaging/config/production.toml"),
    ),
];

/// The text of a preset by name.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// Overrides from `EDGE_OUTBOX__SECTION__KEY=value` environment variables, as
/// `section.key`, sorted by name.
pub fn env_overrides(vars: impl Iterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("EDGE_OUTBOX__")?;
            let path = rest
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            Some(Override::typed(
                &path,
                &value,
                format!("environment variable {name}"),
            ))
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn parse_override(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), ConfigError> {
    // librdkafka property names hold dots themselves: everything after `kafka.properties.`
    // is one key.
    let mut parts: Vec<String> = match path.strip_prefix("kafka.properties.") {
        Some(property) => vec!["kafka".into(), "properties".into(), property.into()],
        None => path.split('.').map(str::to_string).collect(),
    };
    if parts.iter().any(String::is_empty) {
        return Err(bad(path, "not a setting path (use section.key)"));
    }
    let last = parts.pop().expect("at least one part");
    let mut current = table;
    for part in &parts {
        current = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| bad(path, format!("{part} is a value, not a section")))?;
    }
    let value = match (path.starts_with("kafka.properties."), value) {
        // librdkafka properties are strings, whatever they look like.
        (true, toml::Value::String(s)) => toml::Value::String(s),
        (true, other) => toml::Value::String(other.to_string()),
        (false, value) => value,
    };
    current.insert(last, value);
    Ok(())
}
