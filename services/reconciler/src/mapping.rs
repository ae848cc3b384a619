//! Provider events → canonical statuses. Each mapping is a named rule, so every
//! transition can say which rule produced it.

use paytrack_shared::Status;
use paytrack_shared::envelope::{CommandAction, FactSource, InboundFact};
use paytrack_shared::money::MovementEvidence;

/// A fact's canonical status and the rule that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedStatus {
    /// The canonical status.
    pub status: Status,
    /// The rule's name, e.g. `stdwebhooks:payment.succeeded`.
    pub rule: String,
}

/// The generic `stdwebhooks` format: `payment.<status>` for these statuses only.
const STDWEBHOOKS_STATUSES: [(&str, Status); 6] = [
    ("payment.pending", Status::Pending),
    ("payment.held", Status::Held),
    ("payment.succeeded", Status::Succeeded),
    ("payment.failed", Status::Failed),
    ("payment.cancelled", Status::Cancelled),
    ("payment.returned", Status::Returned),
];

/// Maps a fact, or None when no rule covers it (the fact is kept, not applied).
/// `stdwebhooks` events name their status in their type; another provider's event
/// carries the generic provider status ingest's mapping table of that provider gave
/// its native type, and the rule names that native type (`razorpay:payment.captured`).
pub fn map_fact(fact: &InboundFact) -> Option<MappedStatus> {
    match &fact.source {
        FactSource::StatusQuery(event) => {
            // The status-query answer names a canonical provider status
            // (`pending`, `succeeded`, …), the same set the generic webhook uses.
            let event_type = format!("payment.{}", event.event_type);
            STDWEBHOOKS_STATUSES
                .iter()
                .find(|(known, _)| *known == event_type)
                .map(|(_, status)| MappedStatus {
                    status: *status,
                    rule: format!("status_query:{}", event.event_type),
                })
        }
        FactSource::Webhook(event) => {
            let generic = match event.provider.as_str() {
                "stdwebhooks" => event.event_type.clone(),
                _ => format!("payment.{}", event.status.as_deref()?),
            };
            STDWEBHOOKS_STATUSES
                .iter()
                .find(|(event_type, _)| *event_type == generic)
                .map(|(_, status)| MappedStatus {
                    status: *status,
                    rule: format!("{}:{}", event.provider, event.event_type),
                })
        }
        FactSource::Command(command) => {
            let status = match &command.action {
                CommandAction::Create(_) => Status::Initiated,
                CommandAction::Cancel { .. } => Status::Cancelled,
                CommandAction::Resolve { status, .. } => *status,
                // A retry asks a provider again; what the provider answers moves
                // the payment, not the command itself.
                CommandAction::Retry { .. } => return None,
            };
            Some(MappedStatus {
                status,
                rule: format!("command:{}", command.action.name()),
            })
        }
    }
}

/// A provider event that reports refunds or disputes: judged by the movements
/// core, not the status table.
#[derive(Debug, Clone)]
pub struct MovementFact<'a> {
    /// The rule (`<provider>:<event type>`), with `succeeded`: the most a movement
    /// moves the status to (when it proves the capture).
    pub mapped: MappedStatus,
    /// The movements it reports.
    pub evidence: &'a MovementEvidence,
    /// The payment's amount, where the event gives it.
    pub payment_amount: Option<i64>,
}

/// The movements `fact` reports, if it is a provider event that reports any.
pub fn movement_of(fact: &InboundFact) -> Option<MovementFact<'_>> {
    let (FactSource::Webhook(event) | FactSource::StatusQuery(event)) = &fact.source else {
        return None;
    };
    let evidence = event.movement.as_ref()?;
    Some(MovementFact {
        mapped: MappedStatus {
            status: Status::Succeeded,
            rule: format!("{}:{}", event.provider, event.event_type),
        },
        evidence,
        payment_amount: event.amount_minor,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use paytrack_shared::envelope::{ProviderEvent, RawEvidence};
    use paytrack_shared::{PaymentId, TenantId};

    use super::*;

    fn fact(provider: &str, event_type: &str) -> InboundFact {
        fact_with(provider, event_type, None)
    }

    fn fact_with(provider: &str, event_type: &str, status: Option<&str>) -> InboundFact {
        InboundFact {
            v: 1,
            fact_id: "wh:x:1".into(),
            tenant: TenantId::new("t").unwrap(),
            payment_id: PaymentId::new("p").unwrap(),
            merchant_id: None,
            received_at: chrono::Utc::now(),
            source: FactSource::Webhook(ProviderEvent {
                status: status.map(str::to_owned),
                ..ProviderEvent::new(provider, "1", event_type)
            }),
            raw: RawEvidence {
                headers: BTreeMap::new(),
                body: String::new(),
            },
        }
    }

    #[test]
    fn stdwebhooks_rules() {
        let cases = [
            ("payment.pending", Some(Status::Pending)),
            ("payment.held", Some(Status::Held)),
            ("payment.succeeded", Some(Status::Succeeded)),
            ("payment.failed", Some(Status::Failed)),
            ("payment.cancelled", Some(Status::Cancelled)),
            ("payment.returned", Some(Status::Returned)),
            ("payment.initiated", None),
            ("payment.investigation_required", None),
            ("refund.created", None),
        ];
        for (event_type, expected) in cases {
            let mapped = map_fact(&fact("stdwebhooks", event_type));
            assert_eq!(mapped.as_ref().map(|m| m.status), expected, "{event_type}");
            if let Some(m) = mapped {
                assert_eq!(m.rule, format!("stdwebhooks:{event_type}"));
            }
        }
        assert_eq!(map_fact(&fact("unknown", "payment.succeeded")), None);
    }

    /// Razorpay and Stripe events carry the generic status ingest's table gave them;
    /// the rule names the provider's own event type.
    #[test]
    fn other_providers_map_by_the_status_ingest_gave_them() {
        let mapped = map_fact(&fact_with("razorpay", "payment.captured", Some("succeeded"))).unwrap();
        assert_eq!(mapped.status, Status::Succeeded);
        assert_eq!(mapped.rule, "razorpay:payment.captured");
        let odd = fact_with("razorpay", "payment.captured", Some("investigation_required"));
        assert_eq!(map_fact(&odd), None);
        assert_eq!(map_fact(&fact("stripe", "payment_intent.created")), None);
    }
}
