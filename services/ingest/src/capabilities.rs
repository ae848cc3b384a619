//! Capabilities as data: what each country × rail × program supports (cancel, retry,
//! instant, refund, …), from `data/capabilities.json`, served at
//! `GET /v1/capabilities` and checked before any command is recorded.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Json;
use chrono::{DateTime, Utc};
use paytrack_shared::envelope::CapabilitySnapshot;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The capability table compiled into ingest.
const CAPABILITIES_JSON: &str = include_str!("../data/capabilities.json");

/// The whole table, as `GET /v1/capabilities` serves it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capabilities {
    /// Every feature the table speaks of.
    pub features: Vec<String>,
    /// One entry per country, rail and program (`program: null`: the rail's default).
    pub entries: Vec<CapabilityEntry>,
}

/// What one country, rail and program supports.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CapabilityEntry {
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// The rail.
    pub rail: String,
    /// The program (None: any program without an entry of its own).
    pub program: Option<String>,
    /// Feature → supported.
    pub features: BTreeMap<String, bool>,
}

/// The feature a create asks for: that the country, rail and program exist at all.
pub const FEATURE_CREATE: &str = "create";

impl Capabilities {
    /// The compiled-in table (checked by a unit test, so it always parses).
    pub fn get() -> &'static Capabilities {
        static TABLE: OnceLock<Capabilities> = OnceLock::new();
        TABLE.get_or_init(|| {
            serde_json::from_str(CAPABILITIES_JSON).unwrap_or_else(|error| {
                tracing::error!(%error, "data/capabilities.json does not parse; no capability is supported");
                Capabilities {
                    features: Vec::new(),
                    entries: Vec::new(),
                }
            })
        })
    }

    /// The entry for `program` on `country` and `rail`, else the rail's default entry.
    pub fn lookup(&self, country: &str, rail: &str, program: Option<&str>) -> Option<&CapabilityEntry> {
        let on = |p: Option<&str>| {
            self.entries
                .iter()
                .find(|e| e.country == country && e.rail == rail && e.program.as_deref() == p)
        };
        program.and_then(|p| on(Some(p))).or_else(|| on(None))
    }

    /// Checks that `feature` is supported and returns the snapshot the decision was
    /// made on; [`ApiError::Unsupported`] otherwise (`create`: the combination is
    /// unknown).
    pub fn check(
        &self,
        feature: &str,
        country: &str,
        rail: &str,
        program: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CapabilitySnapshot, ApiError> {
        let unsupported = || ApiError::Unsupported {
            feature: feature.to_owned(),
            country: country.to_owned(),
            rail: rail.to_owned(),
            program: program.map(str::to_owned),
        };
        let entry = self.lookup(country, rail, program).ok_or_else(unsupported)?;
        if feature != FEATURE_CREATE && !entry.features.get(feature).copied().unwrap_or(false) {
            return Err(unsupported());
        }
        Ok(CapabilitySnapshot {
            country: country.to_owned(),
            rail: rail.to_owned(),
            program: program.map(str::to_owned),
            features: entry.features.clone(),
            checked_at: now,
        })
    }
}

/// `GET /v1/capabilities`: the table as data.
#[utoipa::path(get, path = "/v1/capabilities", tag = "reference",
    responses((status = 200, description = "What each country, rail and program supports", body = Capabilities)))]
pub async fn get_capabilities() -> Json<&'static Capabilities> {
    Json(Capabilities::get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_names_only_known_features() {
        let table: Capabilities = serde_json::from_str(CAPABILITIES_JSON).unwrap();
        assert!(!table.entries.is_empty());
        for entry in &table.entries {
            for feature in entry.features.keys() {
                assert!(table.features.contains(feature), "{feature} in {entry:?}");
            }
        }
    }

    #[test]
    fn programs_fall_back_to_the_rail_default_and_unsupported_features_are_refused() {
        let table = Capabilities::get();
        let now = Utc::now();
        assert!(table.check("cancel", "US", "rtp", None, now).is_err());
        assert!(table.check("create", "US", "rtp", None, now).is_ok());
        assert!(table.check("create", "ZZ", "card", None, now).is_err());
        assert!(table.check("retry", "US", "card", Some("prepaid"), now).is_err());
        let snapshot = table.check("retry", "US", "card", Some("gold"), now).unwrap();
        assert_eq!(snapshot.program.as_deref(), Some("gold"));
        assert_eq!(snapshot.features.get("retry"), Some(&true));
    }
}
