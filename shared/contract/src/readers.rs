//! How an internal service reads paytrack's subjects: the readers' mirrors, and the
//! NATS user, inbox prefix and subject filters of a reader scoped to one tenant.
//!
//! A tenant reader is a NATS user generated per tenant (`reader-<tenant>`). Its
//! permissions (rendered by the layout crate from these same names) let it subscribe
//! to its tenant's live subjects and create consumers on the mirrors only with a
//! filter inside its tenant, so programs build their filters here and nowhere else.

use crate::ids::TenantId;

/// The mirror of `PAYTRACK_STATUS` (transitions and checkpoints) that readers read
/// history from. A mirror keeps its source's sequences: a position read there is the
/// source's.
pub const STATUS_MIRROR: &str = "PAYTRACK_STATUS_READ";
/// The mirror of `PAYTRACK_OUTCOME` (what each fact did) that readers read from.
pub const OUTCOME_MIRROR: &str = "PAYTRACK_OUTCOME_READ";
/// The mirror of `PAYTRACK_ALERT` (alerts and their acknowledgements) that readers
/// read from.
pub const ALERT_MIRROR: &str = "PAYTRACK_ALERT_READ";

/// The NATS user that reads every tenant's statuses, outcomes and alerts.
pub const ALL_TENANTS_READER_USER: &str = "reader";

/// The NATS user of `tenant`'s reader. Tenant ids are subject tokens, so the name
/// never collides with a service user's (none starts with `reader-`).
pub fn tenant_reader_user(tenant: &TenantId) -> String {
    format!("reader-{tenant}")
}

/// The inbox prefix `tenant`'s reader must connect with: replies to it (consumer
/// creates, pulled history) come there, and no other user may subscribe to it.
pub fn tenant_reader_inbox(tenant: &TenantId) -> String {
    format!("_INBOX_{}", tenant_reader_user(tenant))
}

/// `paytrack.status.<tenant>.>`: every transition of the tenant's payments.
pub fn tenant_status(tenant: &TenantId) -> String {
    format!("paytrack.status.{tenant}.>")
}

/// `paytrack.checkpoint.<tenant>.>`: every checkpoint of the tenant's payments.
pub fn tenant_checkpoints(tenant: &TenantId) -> String {
    format!("paytrack.checkpoint.{tenant}.>")
}

/// `paytrack.outcome.<tenant>.>`: what each of the tenant's facts did.
pub fn tenant_outcomes(tenant: &TenantId) -> String {
    format!("paytrack.outcome.{tenant}.>")
}

/// `paytrack.alert.<tenant>.>`: the tenant's alerts and their acknowledgements.
pub fn tenant_alerts(tenant: &TenantId) -> String {
    format!("paytrack.alert.{tenant}.>")
}

/// Each readers' mirror with the filters `tenant`'s reader may read it with (one
/// consumer per filter: a consumer create names exactly one filter).
pub fn tenant_mirror_filters(tenant: &TenantId) -> [(&'static str, Vec<String>); 3] {
    [
        (STATUS_MIRROR, vec![tenant_status(tenant), tenant_checkpoints(tenant)]),
        (OUTCOME_MIRROR, vec![tenant_outcomes(tenant)]),
        (ALERT_MIRROR, vec![tenant_alerts(tenant)]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_readers_names_follow_the_contract() {
        let t = TenantId::new("acme").unwrap();
        assert_eq!(tenant_reader_user(&t), "reader-acme");
        assert_eq!(tenant_reader_inbox(&t), "_INBOX_reader-acme");
        assert_eq!(tenant_status(&t), "paytrack.status.acme.>");
        assert_eq!(tenant_checkpoints(&t), "paytrack.checkpoint.acme.>");
        assert_eq!(tenant_outcomes(&t), "paytrack.outcome.acme.>");
        assert_eq!(tenant_alerts(&t), "paytrack.alert.acme.>");
    }
}
