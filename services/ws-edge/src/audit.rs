//! Session audit: every open, subscribe (with its outcome) and close goes to
//! `paytrack.session.<tenant>.<edge_id>`, where the projector can store it.

use async_nats::jetstream;
use chrono::Utc;
use paytrack_shared::TenantId;
use paytrack_shared::envelope::{self, ENVELOPE_VERSION, SessionAudit, SessionEvent};
use paytrack_shared::subjects;

/// Publishes one session's audit records.
#[derive(Clone)]
pub struct Audit {
    js: jetstream::Context,
    edge_id: String,
    session_id: String,
    tenant: TenantId,
    subject: String,
    transport: &'static str,
}

impl Audit {
    /// An audit trail for one session.
    pub fn new(
        js: jetstream::Context,
        edge_id: &str,
        session_id: &str,
        tenant: &TenantId,
        subject: &str,
        transport: &'static str,
    ) -> Audit {
        Audit {
            js,
            edge_id: edge_id.to_owned(),
            session_id: session_id.to_owned(),
            tenant: tenant.clone(),
            subject: subject.to_owned(),
            transport,
        }
    }

    /// Records `event`. Audit must not stall a session, so a failure is logged, not
    /// retried here.
    pub async fn record(&self, event: SessionEvent) {
        let record = SessionAudit {
            v: ENVELOPE_VERSION,
            session_id: self.session_id.clone(),
            tenant: self.tenant.clone(),
            subject: self.subject.clone(),
            edge_id: self.edge_id.clone(),
            transport: self.transport.to_owned(),
            at: Utc::now(),
            event,
        };
        let subject = subjects::session(&self.tenant, &self.edge_id);
        let result = async { self.js.publish(subject, envelope::encode(&record)).await?.await }.await;
        if let Err(error) = result {
            tracing::warn!(%error, session_id = %self.session_id, "session audit not recorded");
        }
    }
}
