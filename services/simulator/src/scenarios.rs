//! Named per-payment stories (`POST /v1/scenarios/{name}`), played at a sandbox
//! provider over the real webhook path, the way `stripe trigger` plays one: a
//! payment stuck in pending that only the status-query API settles, a capture after
//! a failure, events out of order, a storm of duplicates, a partial refund, a
//! dispute won or lost, a payout returned. Each answers the payment it made and the
//! state paytrack should end in. A story ignores the provider's random behaviour
//! (success rate, loss, duplicates, reordering) but keeps its latency.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gateway::{Behaviour, GatewayError, Gateways, Initiation, MovementRequest};
use crate::sign::Signer;

/// How far before the initiation a story's own events are stamped.
const STORY_LEAD_SECS: i64 = 60;

/// One story's script step.
#[derive(Debug, Clone)]
enum Step {
    /// The provider's truth moves to this status (the status-query API answers it).
    Truth(&'static str),
    /// The webhook for this status, stamped `at` seconds after the story's start, sent
    /// `copies` times.
    Send {
        /// The provider status the event reports.
        status: &'static str,
        /// Its provider time, in seconds after the story's start.
        at: i64,
        /// How many times the same delivery is posted.
        copies: u32,
    },
    /// Money moves after the outcome (a refund, a dispute, a late capture, a return).
    Move(MovementRequest),
}

/// A named story.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Its name in the API's path.
    pub name: &'static str,
    /// What happens, in one sentence.
    pub description: &'static str,
    /// The sandbox providers that can play it; the first is the default.
    pub providers: &'static [&'static str],
    /// The payment's rail.
    pub rail: &'static str,
    /// Its currency.
    pub currency: &'static str,
    /// Its amount in minor units.
    pub amount_minor: i64,
    /// Whether it is a payout.
    pub payout: bool,
}

const ALL: &[&str] = &["stdwebhooks", "razorpay", "stripe"];
const MONEY: &[&str] = &["stripe", "razorpay"];

/// Every scenario.
pub const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: "stuck_pending",
        description: "pending, then no further webhook: only the status-query API says it succeeded, so the stuck-payment sweep settles it",
        providers: ALL,
        rail: "rtp",
        currency: "USD",
        amount_minor: 2500,
        payout: false,
    },
    Scenario {
        name: "late_capture_after_failure",
        description: "pending, failed, then captured after all: the status model's late-capture rule decides, with a captured_after_failure alert",
        providers: MONEY,
        rail: "card",
        currency: "USD",
        amount_minor: 1800,
        payout: false,
    },
    Scenario {
        name: "out_of_order",
        description: "the success webhook arrives before the pending one; provider time orders them, so it ends succeeded",
        providers: ALL,
        rail: "card",
        currency: "USD",
        amount_minor: 1200,
        payout: false,
    },
    Scenario {
        name: "duplicate_storm",
        description: "every webhook is delivered eight times; the repeats change nothing",
        providers: ALL,
        rail: "card",
        currency: "USD",
        amount_minor: 900,
        payout: false,
    },
    Scenario {
        name: "partial_refund",
        description: "succeeded, then 30% refunded: the payment stays succeeded with the rest as its net",
        providers: MONEY,
        rail: "card",
        currency: "USD",
        amount_minor: 5000,
        payout: false,
    },
    Scenario {
        name: "dispute_won",
        description: "succeeded, disputed, and the merchant wins: the amount is withdrawn, then reinstated",
        providers: MONEY,
        rail: "card",
        currency: "USD",
        amount_minor: 4000,
        payout: false,
    },
    Scenario {
        name: "dispute_lost",
        description: "succeeded, disputed, and the merchant loses: the amount stays withdrawn",
        providers: MONEY,
        rail: "card",
        currency: "USD",
        amount_minor: 4000,
        payout: false,
    },
    Scenario {
        name: "payout_returned",
        description: "a payout paid, then returned by the beneficiary's bank",
        providers: &["razorpay"],
        rail: "imps",
        currency: "INR",
        amount_minor: 75000,
        payout: true,
    },
];

impl Scenario {
    /// The scenario named `name`.
    pub fn named(name: &str) -> Option<&'static Scenario> {
        SCENARIOS.iter().find(|s| s.name == name)
    }

    fn script(&self) -> Vec<Step> {
        let send = |status, at| Step::Send { status, at, copies: 1 };
        let paid = [send("pending", 0), Step::Truth("succeeded"), send("succeeded", 1)];
        match self.name {
            "stuck_pending" => vec![send("pending", 0), Step::Truth("succeeded")],
            "late_capture_after_failure" => vec![
                send("pending", 0),
                Step::Truth("failed"),
                send("failed", 1),
                Step::Move(MovementRequest::LateCapture),
            ],
            "out_of_order" => vec![Step::Truth("succeeded"), send("succeeded", 1), send("pending", 0)],
            "duplicate_storm" => vec![
                Step::Send {
                    status: "pending",
                    at: 0,
                    copies: 8,
                },
                Step::Truth("succeeded"),
                Step::Send {
                    status: "succeeded",
                    at: 1,
                    copies: 8,
                },
            ],
            "partial_refund" => with(
                &paid,
                Step::Move(MovementRequest::Refund {
                    amount_minor: Some(self.amount_minor * 3 / 10),
                    fails: false,
                }),
            ),
            "dispute_won" => with(&paid, Step::Move(MovementRequest::Dispute { won: true })),
            "dispute_lost" => with(&paid, Step::Move(MovementRequest::Dispute { won: false })),
            "payout_returned" => with(&paid, Step::Move(MovementRequest::PayoutReturn)),
            _ => Vec::new(),
        }
    }

    /// The state paytrack ends in once the story is played at `provider`: the
    /// status, and the amounts of its REST view that the story moves.
    pub fn expect(&self, provider: &str) -> Expectation {
        let amount = self.amount_minor;
        let (status, amounts): (String, &[(&str, i64)]) = match self.name {
            "late_capture_after_failure" => {
                let to = paytrack_shared::StatusModel::get()
                    .late_capture(provider, Some(self.rail))
                    .map_or_else(|| "succeeded".to_owned(), |l| l.to.to_string());
                return Expectation {
                    amounts: if to == "succeeded" {
                        BTreeMap::from([("net_minor".to_owned(), amount)])
                    } else {
                        BTreeMap::new()
                    },
                    status: to,
                };
            }
            "partial_refund" => (
                "succeeded".into(),
                &[
                    ("refunded_minor", amount * 3 / 10),
                    ("net_minor", amount - amount * 3 / 10),
                ],
            ),
            "dispute_won" => ("succeeded".into(), &[("disputed_minor", 0), ("net_minor", amount)]),
            "dispute_lost" => ("succeeded".into(), &[("disputed_minor", amount), ("net_minor", 0)]),
            "payout_returned" => (
                "returned".into(),
                &[("paid_minor", amount), ("returned_minor", amount), ("net_minor", 0)],
            ),
            _ => ("succeeded".into(), &[("net_minor", amount)]),
        };
        Expectation {
            status,
            amounts: amounts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }
}

fn with(first: &[Step], last: Step) -> Vec<Step> {
    let mut steps = first.to_vec();
    steps.push(last);
    steps
}

/// Where a played story leaves the payment in paytrack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Expectation {
    /// Its canonical status.
    pub status: String,
    /// Amounts of its view (`amounts.*` of `GET /v1/payments/{id}`).
    pub amounts: BTreeMap<String, i64>,
}

/// `POST /v1/scenarios/{name}`: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRequest {
    /// The sandbox provider (default: the scenario's first).
    #[serde(default)]
    pub provider: Option<String>,
    /// The tenant (default, and the only one allowed: the simulator's).
    #[serde(default)]
    pub tenant: Option<String>,
    /// paytrack's payment id (default: a new `sc_<scenario>_…`).
    #[serde(default)]
    pub payment_id: Option<String>,
    /// The merchant (default: `m_scenarios`).
    #[serde(default)]
    pub merchant_id: Option<String>,
}

/// The answer to a started story.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    /// The scenario.
    pub scenario: String,
    /// What happens.
    pub description: String,
    /// The payment.
    pub payment_id: String,
    /// The sandbox provider playing it.
    pub provider: String,
    /// The provider's reference.
    pub provider_ref: String,
    /// The tenant.
    pub tenant: String,
    /// Where paytrack ends.
    pub expect: Expectation,
}

impl Gateways {
    /// Starts the story `name`: records its payment at once, answers it, and plays
    /// the story's webhooks in the background.
    pub fn play(&self, name: &str, request: ScenarioRequest, tenant: &str) -> Result<Started, GatewayError> {
        let scenario = Scenario::named(name).ok_or_else(|| GatewayError::UnknownScenario(name.to_owned()))?;
        let provider = request.provider.unwrap_or_else(|| scenario.providers[0].to_owned());
        if !scenario.providers.contains(&provider.as_str()) {
            return Err(GatewayError::Invalid(format!(
                "{name} is played by {}, not {provider}",
                scenario.providers.join(", ")
            )));
        }
        let random = uuid::Uuid::new_v4().simple().to_string();
        let initiation = Initiation {
            tenant: request.tenant.unwrap_or_else(|| tenant.to_owned()),
            payment_id: request
                .payment_id
                .unwrap_or_else(|| format!("sc_{name}_{}", &random[..12])),
            amount_minor: scenario.amount_minor,
            currency: scenario.currency.to_owned(),
            rail: scenario.rail.to_owned(),
            merchant_id: Some(request.merchant_id.unwrap_or_else(|| "m_scenarios".to_owned())),
            payout: scenario.payout,
        };
        let (initiated, signer, behaviour) = self.accept(&provider, initiation.clone(), false)?;
        let scripted = Behaviour {
            loss_pct: 0.0,
            duplicate_pct: 0.0,
            reorder_pct: 0.0,
            send_metadata: true,
            ..behaviour
        };
        let key = (initiated.provider.clone(), initiated.provider_ref.clone());
        tracing::info!(scenario = name, payment_id = %initiation.payment_id, provider = %provider, "scenario started");
        let this = self.clone();
        let script = scenario.script();
        tokio::spawn(async move { this.play_script(key, signer, script, scripted).await });
        Ok(Started {
            scenario: name.to_owned(),
            description: scenario.description.to_owned(),
            payment_id: initiation.payment_id,
            expect: scenario.expect(&provider),
            provider,
            provider_ref: initiated.provider_ref,
            tenant: initiation.tenant,
        })
    }

    async fn play_script(&self, key: (String, String), signer: Signer, script: Vec<Step>, behaviour: Behaviour) {
        // The story's own events are stamped a minute back, so the movements that
        // follow (stamped when sent) are always later in provider time.
        let Some(start) = self.payment(&key.0, &key.1).map(|p| p.created_at - STORY_LEAD_SECS) else {
            return;
        };
        for step in script {
            match step {
                Step::Truth(status) => self.settle(&key, status),
                Step::Send { status, at, copies } => {
                    if !self.pause(&behaviour).await {
                        return;
                    }
                    self.send_copies(&key, &signer, status, start + at, copies).await;
                }
                Step::Move(request) => {
                    let Ok((_, steps)) = self.plan_movement(&key, &request) else {
                        tracing::warn!(?request, "scenario movement refused by the sandbox");
                        return;
                    };
                    self.play_movement(&key, &signer, &request, steps, &behaviour).await;
                }
            }
        }
    }

    /// Waits the provider's latency; false once the simulator stops.
    async fn pause(&self, behaviour: &Behaviour) -> bool {
        tokio::select! {
            _ = self.stopped() => false,
            _ = tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)) => true,
        }
    }

    /// Posts the event for `status`, stamped `at`, as one delivery sent `copies` times.
    async fn send_copies(&self, key: &(String, String), signer: &Signer, status: &str, at: i64, copies: u32) {
        let Some(payment) = self.payment(&key.0, &key.1) else {
            return;
        };
        let delivery_id = crate::events::delivery_id(signer.provider());
        let Some(body) = crate::events::body(&payment, status, &delivery_id, at, true) else {
            tracing::warn!(
                status,
                provider = signer.provider(),
                "the sandbox sends no event for this status"
            );
            return;
        };
        let url = self.webhook_url(&payment.tenant, signer.provider());
        for _ in 0..copies {
            if self.post(&url, signer, &delivery_id, &body, &payment).await {
                self.count(key, 1, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario has a story, a default provider that can sign it, and an end
    /// state; only Razorpay's sandbox plays the payout.
    #[test]
    fn every_scenario_is_playable_at_its_providers() {
        let known = ["stdwebhooks", "razorpay", "stripe"];
        for scenario in &SCENARIOS {
            assert!(!scenario.script().is_empty(), "{}", scenario.name);
            assert!(!scenario.providers.is_empty(), "{}", scenario.name);
            for provider in scenario.providers {
                assert!(known.contains(provider), "{}: {provider}", scenario.name);
                assert!(!scenario.expect(provider).status.is_empty(), "{}", scenario.name);
            }
            assert_eq!(scenario.payout, scenario.providers == ["razorpay"], "{}", scenario.name);
            assert_eq!(Scenario::named(scenario.name).map(|s| s.name), Some(scenario.name));
        }
        assert!(Scenario::named("no_such_story").is_none());
        let refund = Scenario::named("partial_refund").map(|s| s.expect("stripe"));
        assert_eq!(
            refund.map(|e| (e.status, e.amounts)),
            Some((
                "succeeded".to_owned(),
                BTreeMap::from([("net_minor".to_owned(), 3500), ("refunded_minor".to_owned(), 1500)])
            ))
        );
    }
}
