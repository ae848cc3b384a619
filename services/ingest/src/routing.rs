//! Gateway routing at create time: the configured rules (`data/routing.json`: rail ×
//! country → candidate providers, in preference order) and each provider's rolling
//! success rate and availability decide the provider; the choice and its reason go on
//! the create command ([`RoutingDecision`]).
//!
//! Success rates come from what actually happened: [`ProviderHealth`] is fed by
//! [`crate::outcomes_feed`] with every terminal transition (`succeeded` or `failed`,
//! whose `terms.provider` names the provider). Availability comes from initiation
//! calls: a provider whose sandbox gateway failed to answer is skipped for a while.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use paytrack_shared::envelope::RoutingDecision;
use serde::Deserialize;

/// The routing rules compiled into ingest.
const ROUTING_JSON: &str = include_str!("../data/routing.json");
/// Outcomes per provider the success rate is computed over.
pub const WINDOW: usize = 50;
/// Outcomes older than this no longer count.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Below this many outcomes a provider's rate is not trusted (it counts as 100%).
pub const MIN_SAMPLES: usize = 5;
/// How long a provider whose initiation failed is skipped.
pub const UNAVAILABLE_FOR: Duration = Duration::from_secs(30);

/// The rules file.
#[derive(Debug, Deserialize)]
pub struct Rules {
    /// First match wins; `*` matches anything.
    pub rules: Vec<Rule>,
}

/// One rule: which providers may take a rail in a country, preferred first.
#[derive(Debug, Deserialize)]
pub struct Rule {
    /// The rail, or `*`.
    pub rail: String,
    /// The country, or `*`.
    pub country: String,
    /// Candidate providers, in preference order (ties go to the earlier).
    pub providers: Vec<String>,
}

impl Rules {
    /// The compiled-in rules (a unit test checks they parse).
    pub fn get() -> &'static Rules {
        static RULES: OnceLock<Rules> = OnceLock::new();
        RULES.get_or_init(|| {
            serde_json::from_str(ROUTING_JSON).unwrap_or_else(|error| {
                tracing::error!(%error, "data/routing.json does not parse; routing to stdwebhooks");
                Rules {
                    rules: vec![Rule {
                        rail: "*".into(),
                        country: "*".into(),
                        providers: vec!["stdwebhooks".into()],
                    }],
                }
            })
        })
    }

    /// The first rule matching `rail` and `country`.
    pub fn matching(&self, rail: &str, country: &str) -> Option<&Rule> {
        let fits = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        self.rules
            .iter()
            .find(|r| fits(&r.rail, rail) && fits(&r.country, country) && !r.providers.is_empty())
    }
}

#[derive(Default)]
struct Stats {
    /// (when, succeeded), newest last.
    outcomes: VecDeque<(Instant, bool)>,
    unavailable_until: Option<Instant>,
}

/// Each provider's recent outcomes and availability, shared by every request.
#[derive(Clone, Default)]
pub struct ProviderHealth(Arc<Mutex<HashMap<String, Stats>>>);

/// A provider's standing when a decision was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// Success rate over the window (None: fewer than [`MIN_SAMPLES`] outcomes).
    pub rate: Option<f64>,
    /// Outcomes counted.
    pub samples: usize,
    /// False while its initiation failures keep it out.
    pub available: bool,
}

impl ProviderHealth {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Stats>) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    /// Records a terminal outcome of a payment handled by `provider`.
    pub fn record_outcome(&self, provider: &str, succeeded: bool) {
        self.with(|map| {
            let stats = map.entry(provider.to_owned()).or_default();
            stats.outcomes.push_back((Instant::now(), succeeded));
            while stats.outcomes.len() > WINDOW {
                stats.outcomes.pop_front();
            }
        });
    }

    /// Marks `provider` unavailable for [`UNAVAILABLE_FOR`].
    pub fn mark_unavailable(&self, provider: &str) {
        self.with(|map| {
            map.entry(provider.to_owned()).or_default().unavailable_until = Some(Instant::now() + UNAVAILABLE_FOR)
        });
    }

    /// The provider's standing now.
    pub fn standing(&self, provider: &str) -> Standing {
        self.with(|map| {
            let now = Instant::now();
            let Some(stats) = map.get_mut(provider) else {
                return Standing {
                    rate: None,
                    samples: 0,
                    available: true,
                };
            };
            while stats
                .outcomes
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > MAX_AGE)
            {
                stats.outcomes.pop_front();
            }
            let samples = stats.outcomes.len();
            let ok = stats.outcomes.iter().filter(|(_, s)| *s).count();
            Standing {
                rate: (samples >= MIN_SAMPLES).then(|| ok as f64 / samples as f64),
                samples,
                available: stats.unavailable_until.is_none_or(|until| now >= until),
            }
        })
    }

    /// Chooses a provider for `rail` in `country`: among the matching rule's
    /// candidates that are available (all of them if none is), the highest success
    /// rate (an untrusted rate counts as 100%), ties to the earlier candidate. The
    /// reason names the rule and every candidate's standing.
    pub fn choose(&self, rail: &str, country: &str) -> RoutingDecision {
        let Some(rule) = Rules::get().matching(rail, country) else {
            return RoutingDecision {
                provider: "stdwebhooks".into(),
                provider_ref: None,
                reason: format!("no routing rule for {rail}/{country}; the default provider"),
            };
        };
        let standings: Vec<(&str, Standing)> = rule.providers.iter().map(|p| (p.as_str(), self.standing(p))).collect();
        let any_available = standings.iter().any(|(_, s)| s.available);
        let score = |s: &Standing| s.rate.unwrap_or(1.0);
        let mut best: Option<&(&str, Standing)> = None;
        for candidate in &standings {
            if any_available && !candidate.1.available {
                continue;
            }
            if best.is_none_or(|b| score(&candidate.1) > score(&b.1)) {
                best = Some(candidate);
            }
        }
        let chosen = best.map_or(rule.providers[0].as_str(), |(p, _)| p);
        let described: Vec<String> = standings
            .iter()
            .map(|(p, s)| {
                let rate = match s.rate {
                    Some(rate) => format!("success {:.0}% of {}", rate * 100.0, s.samples),
                    None => format!("{} outcomes, too few to judge", s.samples),
                };
                let available = if s.available { "" } else { ", unavailable" };
                format!("{p} ({rate}{available})")
            })
            .collect();
        let why = if standings.len() == 1 {
            "the only candidate".to_owned()
        } else if standings
            .iter()
            .all(|(_, s)| score(s) == score(&standings[0].1) && s.available)
        {
            "first preference, no candidate doing better".to_owned()
        } else {
            "highest success rate among available candidates".to_owned()
        };
        RoutingDecision {
            provider: chosen.to_owned(),
            provider_ref: None,
            reason: format!(
                "rule {}/{}: {}; chose {chosen}: {why}",
                rule.rail,
                rule.country,
                described.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_parse_and_every_rail_has_a_route() {
        let rules: Rules = serde_json::from_str(ROUTING_JSON).unwrap();
        assert!(!rules.rules.is_empty());
        assert!(Rules::get().matching("card", "US").is_some());
        assert!(Rules::get().matching("wire", "ZZ").is_some());
    }

    #[test]
    fn traffic_moves_away_from_a_failing_provider_and_back_when_it_is_the_only_one() {
        let health = ProviderHealth::default();
        assert_eq!(health.choose("card", "US").provider, "stdwebhooks");
        for _ in 0..MIN_SAMPLES {
            health.record_outcome("stdwebhooks", false);
        }
        let decision = health.choose("card", "US");
        assert_eq!(decision.provider, "stripe");
        assert!(
            decision.reason.contains("stdwebhooks (success 0% of 5)"),
            "{}",
            decision.reason
        );
        health.mark_unavailable("stripe");
        assert_eq!(health.choose("card", "US").provider, "stdwebhooks");
    }
}
