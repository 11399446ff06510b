//! The topic catalogue: which CloudEvents types the sidecar accepts and which Kafka topic each
//! one goes to. The built-in entries are data (`catalog.toml`, compiled in), not code; a
//! deployment can add its own entries from the configuration.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The built-in catalogue of the eventzr integration hub.
const BUILTIN: &str = include_str!("catalog.toml");

/// One event type and where it is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventType {
    #[serde(rename = "type")]
    pub event_type: String,
    pub topic: String,
    pub category: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Deserialize)]
struct CatalogFile {
    event: Vec<EventType>,
}

/// The set of known event types, looked up by CloudEvents `type`.
#[derive(Debug, Clone)]
pub struct Catalog {
    by_type: BTreeMap<String, EventType>,
    /// The order of the source document, for listing.
    order: Vec<String>,
}

impl Catalog {
    /// The built-in integration-hub catalogue.
    pub fn builtin() -> Catalog {
        let file: CatalogFile =
            toml::from_str(BUILTIN).expect("the built-in catalogue is valid TOML");
        let mut catalog = Catalog {
            by_type: BTreeMap::new(),
            order: Vec::new(),
        };
        for entry in file.event {
            catalog.insert(entry);
        }
        catalog
    }

    /// The built-in catalogue plus `extra` entries (an extra entry replaces a built-in one of
    /// the same type).
    pub fn with_extra(extra: &[EventType]) -> Catalog {
        let mut catalog = Catalog::builtin();
        for entry in extra {
            catalog.insert(entry.clone());
        }
        catalog
    }

    fn insert(&mut self, entry: EventType) {
        if !self.by_type.contains_key(&entry.event_type) {
            self.order.push(entry.event_type.clone());
        }
        self.by_type.insert(entry.event_type.clone(), entry);
    }

    /// The entry for a CloudEvents `type`, if it is catalogued.
    pub fn lookup(&self, event_type: &str) -> Option<&EventType> {
        self.by_type.get(event_type)
    }

    /// All entries in catalogue order.
    pub fn entries(&self) -> impl Iterator<Item = &EventType> {
        self.order.iter().map(|t| &self.by_type[t])
    }

    /// The distinct topics of the catalogue, in catalogue order.
    pub fn topics(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.entries()
            .filter(|e| seen.insert(e.topic.clone()))
            .map(|e| e.topic.clone())
            .collect()
    }

    /// The category names in catalogue order.
    pub fn categories(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for entry in self.entries() {
            if !out.contains(&entry.category) {
                out.push(entry.category.clone());
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The type of the summary event the relay emits after each delivered batch.
pub const OUTBOX_PUBLISHED_TYPE: &str = "eventzr.integration-hub.outbox.published.v1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_36_types_in_9_categories() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.len(), 36);
        assert_eq!(catalog.categories().len(), 9);
        assert_eq!(catalog.topics().len(), 36);
        let per_category: Vec<usize> = catalog
            .categories()
            .iter()
            .map(|c| catalog.entries().filter(|e| &e.category == c).count())
            .collect();
        assert_eq!(per_category, vec![4, 4, 4, 4, 5, 6, 3, 3, 3]);
    }

    #[test]
    fn a_catalogued_type_is_found_with_its_topic_category_and_description() {
        let catalog = Catalog::builtin();
        let entry = catalog
            .lookup("eventzr.integration-hub.execution.completed.v1")
            .expect("catalogued");
        assert_eq!(
            entry.topic,
            "eventzr.integration-hub.execution.completed.v1"
        );
        assert_eq!(entry.category, "Execution");
        assert_eq!(entry.description, "Execution completed successfully");
        assert!(catalog.lookup("eventzr.integration-hub.nope.v1").is_none());
        assert!(catalog.lookup(OUTBOX_PUBLISHED_TYPE).is_some());
    }

    #[test]
    fn extra_entries_extend_and_override() {
        let extra = vec![
            EventType {
                event_type: "com.example.thing.v1".into(),
                topic: "things".into(),
                category: "Custom".into(),
                description: "A thing".into(),
            },
            EventType {
                event_type: "eventzr.integration-hub.sync.failed.v1".into(),
                topic: "sync-failures".into(),
                category: "Sync Jobs".into(),
                description: String::new(),
            },
        ];
        let catalog = Catalog::with_extra(&extra);
        assert_eq!(catalog.len(), 37);
        assert_eq!(
            catalog.lookup("com.example.thing.v1").unwrap().topic,
            "things"
        );
        assert_eq!(
            catalog
                .lookup("eventzr.integration-hub.sync.failed.v1")
                .unwrap()
                .topic,
            "sync-failures"
        );
    }
}
