//! Every `Nats-Msg-Id` paytrack writes, and the fact ids they are made from: the one
//! place they are spelled.
//!
//! JetStream de-duplicates by message id per stream, across every subject of it, so
//! an id that does not name the tenant lets one tenant's message be dropped as
//! another's duplicate. Each id therefore starts with `<tenant>:`. A tenant is a
//! subject token (`[A-Za-z0-9_-]`, never `:`), so the prefix is unambiguous: ids of
//! two tenants never collide, whatever the rest of the id holds.

use crate::envelope::CommandAction;
use crate::ids::{FactId, FactIdError, PaymentId, TenantId};

/// The stable id of a provider webhook delivery: `wh:<provider>:<delivery id>`.
/// Unique within a tenant (the tenant is the endpoint's, not part of the fact id).
/// The delivery id is the provider's: an id it makes unprintable or too long is refused.
pub fn webhook_fact_id(provider: &str, delivery_id: &str) -> Result<FactId, FactIdError> {
    FactId::new(&format!("wh:{provider}:{delivery_id}"))
}

/// The stable id of a status-query answer, the reconciler's `check`-th query of
/// `payment` with `provider`: `sq:<provider>:<payment>:<check>`, so a replica
/// repeating the same check after a crash records it once.
pub fn status_query_fact_id(provider: &str, payment: &PaymentId, check: u32) -> FactId {
    FactId::from(format!("sq:{provider}:{payment}:{check}"))
}

/// The stable id of an API command (create, cancel, retry, resolve):
/// `cmd:<payment>:<command>:<idempotency key>`, so a caller's retry is dropped while
/// the same key on another payment or command is a fact of its own.
///
/// Collision-free by construction: a payment id is a token (never `:`) and the
/// command is one of [`CommandAction::name`]'s words, so the first two `:` end
/// them and whatever the key spells is only ever the key. The payment id makes every
/// fact id unique per payment, also when a key is reused after its TTL. The key is the
/// caller's: a key that makes the id unprintable or too long is refused.
pub fn command_fact_id(
    payment: &PaymentId,
    action: &CommandAction,
    idempotency_key: &str,
) -> Result<FactId, FactIdError> {
    FactId::new(&format!("cmd:{payment}:{}:{idempotency_key}", action.name()))
}

/// An inbound fact in PAYTRACK_IN (webhook or command): `<tenant>:<fact_id>`, so a
/// provider's retry of the same delivery is dropped, another tenant's is not.
pub fn fact(tenant: &TenantId, fact_id: &FactId) -> String {
    format!("{tenant}:{fact_id}")
}

/// A transition in PAYTRACK_STATUS: `<tenant>:<payment_id>:<fact_id>`, the fact
/// that caused it, so a reconciler's retry of the same append is dropped.
pub fn transition(tenant: &TenantId, payment: &PaymentId, fact_id: &FactId) -> String {
    format!("{tenant}:{payment}:{fact_id}")
}

/// A checkpoint in PAYTRACK_STATUS: `<tenant>:<payment_id>:<version>:<checkpoint>`
/// (docs/contract.md §3), one per payment, version and checkpoint kind.
pub fn checkpoint(tenant: &TenantId, payment: &PaymentId, version: u64, checkpoint: &str) -> String {
    format!("{tenant}:{payment}:{version}:{checkpoint}")
}

/// An alert in PAYTRACK_ALERT: `<tenant>:<payment>:<kind>:<discriminator>`, where the
/// discriminator says which occurrence (e.g. the version it is about), so raising the
/// same alert again adds nothing.
pub fn alert(tenant: &TenantId, payment: &PaymentId, kind: &str, discriminator: &str) -> String {
    format!("{tenant}:{payment}:{kind}:{discriminator}")
}

/// An operator's acknowledgement of an alert: `ack:<tenant>:<alert_id>`, so two
/// acknowledgements of one alert sent together are one fact (the first stands).
pub fn alert_ack(tenant: &TenantId, alert_id: &str) -> String {
    format!("ack:{tenant}:{alert_id}")
}

/// A push in PAYTRACK_PUSH: `<tenant>:<user>:<push id>`, where the push id is the
/// backend's idempotency key for it.
pub fn push(tenant: &TenantId, user: &str, push_id: &str) -> String {
    format!("{tenant}:{user}:{push_id}")
}

/// A parked message (and its `dead_letter` alert): one per original message and
/// consumer, so parking again after a lost ack adds nothing. Not tenant-scoped, and
/// needs not be: a stream sequence is unique across tenants.
pub fn dead_letter(stream: &str, consumer: &str, seq: u64) -> String {
    format!("dead:{stream}:{consumer}:{seq}")
}

/// A `consumer_rewound` alert: one per consumer, position it was found at and stream
/// end it was found past, so every replica that notices the same overrun raises one
/// alert between them.
pub fn consumer_rewound(stream: &str, consumer: &str, delivered: u64, stream_last: u64) -> String {
    format!("rewound:{stream}:{consumer}:{delivered}:{stream_last}")
}

/// A fact's outcome in PAYTRACK_OUTCOME: `<tenant>:<payment_id>:<inbound_seq>:outcome`.
/// Keyed by the fact's position in PAYTRACK_IN, so a redelivery of the same message
/// records one outcome, while a later repeat of the fact (stored again after the
/// inbound window) records its own (`duplicate`).
pub fn outcome(tenant: &TenantId, payment: &PaymentId, inbound_seq: u64) -> String {
    format!("{tenant}:{payment}:{inbound_seq}:outcome")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> (TenantId, TenantId) {
        (TenantId::new("acme").unwrap(), TenantId::new("beta").unwrap())
    }

    fn pay() -> PaymentId {
        PaymentId::new("pay_1").unwrap()
    }

    #[test]
    fn a_parked_message_is_named_by_its_stream_position() {
        assert_eq!(dead_letter("PAYTRACK_IN", "c", 7), "dead:PAYTRACK_IN:c:7");
        assert_ne!(
            dead_letter("PAYTRACK_IN", "c", 7),
            dead_letter("PAYTRACK_STATUS", "c", 7)
        );
    }

    #[test]
    fn fact_ids_and_their_message_ids() {
        let (a, b) = tenants();
        let id = webhook_fact_id("stdwebhooks", "msg_1").unwrap();
        assert_eq!(id, "wh:stdwebhooks:msg_1");
        let cancel = CommandAction::Cancel { reason: None };
        assert_eq!(command_fact_id(&pay(), &cancel, "k1").unwrap(), "cmd:pay_1:cancel:k1");
        assert_eq!(fact(&a, &id), "acme:wh:stdwebhooks:msg_1");
        assert_ne!(fact(&a, &id), fact(&b, &id));
        let command = command_fact_id(&pay(), &cancel, "k1").unwrap();
        assert_ne!(fact(&a, &command), fact(&b, &command));
    }

    #[test]
    fn outside_parts_that_make_a_bad_fact_id_are_refused() {
        let cancel = CommandAction::Cancel { reason: None };
        assert_eq!(command_fact_id(&pay(), &cancel, "k 1"), Err(FactIdError::NotPrintable));
        assert_eq!(
            command_fact_id(&pay(), &cancel, &"k".repeat(600)),
            Err(FactIdError::TooLong)
        );
        assert_eq!(webhook_fact_id("stripe", "evt\n1"), Err(FactIdError::NotPrintable));
    }

    /// No key spells another command's id: every (payment, command, key) makes its own.
    #[test]
    fn command_fact_ids_cannot_be_spelled_by_a_key() {
        let payments = [pay(), PaymentId::new("pay_2").unwrap()];
        let actions = [
            CommandAction::Cancel { reason: None },
            CommandAction::Retry {
                reason: None,
                routing: None,
            },
            CommandAction::Resolve {
                status: crate::Status::Failed,
                reason: String::new(),
            },
        ];
        let keys = [
            "K",
            "pay_1:cancel:K",
            "cancel:K",
            ":K",
            "K:",
            "pay_2:retry:pay_1:cancel:K",
        ];
        let mut seen = std::collections::HashMap::new();
        for payment in &payments {
            for action in &actions {
                for key in keys {
                    let id = command_fact_id(payment, action, key).unwrap();
                    let previous = seen.insert(id.clone(), (payment.clone(), action.name(), key));
                    assert!(previous.is_none(), "{id} is spelled twice: {previous:?}");
                }
            }
        }
    }

    #[test]
    fn transitions_of_two_tenants_never_collide() {
        let (a, b) = tenants();
        assert_eq!(transition(&a, &pay(), &"wh:x:1".into()), "acme:pay_1:wh:x:1");
        assert_ne!(
            transition(&a, &pay(), &"wh:x:1".into()),
            transition(&b, &pay(), &"wh:x:1".into())
        );
    }

    #[test]
    fn checkpoints_of_two_tenants_never_collide() {
        let (a, b) = tenants();
        assert_eq!(checkpoint(&a, &pay(), 3, "persisted"), "acme:pay_1:3:persisted");
        assert_ne!(
            checkpoint(&a, &pay(), 3, "persisted"),
            checkpoint(&b, &pay(), 3, "persisted")
        );
    }

    #[test]
    fn pushes_of_two_tenants_never_collide() {
        let (a, b) = tenants();
        assert_eq!(push(&a, "u1", "p1"), "acme:u1:p1");
        assert_ne!(push(&a, "u1", "p1"), push(&b, "u1", "p1"));
    }

    #[test]
    fn outcomes_of_two_tenants_never_collide() {
        let (a, b) = tenants();
        assert_eq!(outcome(&a, &pay(), 7), "acme:pay_1:7:outcome");
        assert_ne!(outcome(&a, &pay(), 7), outcome(&b, &pay(), 7));
    }

    /// Whatever the rest of an id holds, its tenant is what precedes the first `:`,
    /// so no choice of payment, user or fact id makes two tenants' ids equal.
    #[test]
    fn the_tenant_prefix_is_unambiguous() {
        let (a, b) = tenants();
        let tricky = ["", ":", "beta:", "acme:x", "a:b:c"];
        for x in tricky {
            for id in [fact(&a, &x.into()), push(&a, x, x)] {
                assert_eq!(id.split(':').next(), Some("acme"));
                assert_ne!(id, fact(&b, &x.into()));
                assert_ne!(id, push(&b, x, x));
            }
        }
    }
}
