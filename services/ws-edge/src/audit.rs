//! Session audit: every open, subscribe (with its outcome) and close goes to
//! `paytrack.session.<tenant>.<edge_id>`, where the projector can store it.
//!
//! Strings a client chose (a refused channel name) or a token carries (its subject)
//! are published with control characters escaped (`\u{0}`), so a record is always
//! one PostgreSQL can store: a NUL would otherwise be refused by the projector.

use std::sync::Arc;

use chrono::Utc;
use paytrack_shared::TenantId;
use paytrack_shared::envelope::{self, ENVELOPE_VERSION, SessionAudit, SessionEvent};
use paytrack_shared::subjects;

/// The longest client-chosen string an audit record keeps, in characters.
const MAX_LEN: usize = 256;

/// Publishes one session's audit records. It lives as long as its session: it reaches
/// JetStream and the edge's name through the edge's shared state rather than holding
/// its own copy of the JetStream context (over 200 bytes) and of the name.
#[derive(Clone)]
pub struct Audit {
    edge: Arc<crate::app::EdgeState>,
    session_id: String,
    tenant: TenantId,
    subject: String,
    transport: &'static str,
}

impl Audit {
    /// An audit trail for one session.
    pub fn new(
        edge: &Arc<crate::app::EdgeState>,
        session_id: String,
        tenant: &TenantId,
        subject: &str,
        transport: &'static str,
    ) -> Audit {
        Audit {
            edge: edge.clone(),
            session_id,
            tenant: tenant.clone(),
            subject: paytrack_nats::printable(subject, MAX_LEN),
            transport,
        }
    }

    /// The session's id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The session's transport (`websocket`, `sse`).
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// Records `event`. Audit must not stall a session, so a failure is logged, not
    /// retried here.
    pub async fn record(&self, event: SessionEvent) {
        // Boxed: the publish's state exists only while it runs, not inline in every
        // session's future (an idle session would carry it for its whole life).
        Box::pin(self.publish(event)).await;
    }

    async fn publish(&self, event: SessionEvent) {
        let event = match event {
            SessionEvent::Denied { channel, code } => SessionEvent::Denied {
                channel: paytrack_nats::printable(&channel, MAX_LEN),
                code,
            },
            SessionEvent::Close { code, reason } => SessionEvent::Close {
                code,
                reason: paytrack_nats::printable(&reason, MAX_LEN),
            },
            SessionEvent::Open { scope } => SessionEvent::Open {
                scope: scope.map(|s| s.iter().map(|c| paytrack_nats::printable(c, MAX_LEN)).collect()),
            },
            event @ (SessionEvent::Subscribe { .. } | SessionEvent::Stale { .. }) => event,
        };
        let record = SessionAudit {
            v: ENVELOPE_VERSION,
            session_id: self.session_id.clone(),
            tenant: self.tenant.clone(),
            subject: self.subject.clone(),
            edge_id: self.edge.edge_id.clone(),
            transport: self.transport.to_owned(),
            at: Utc::now(),
            event,
        };
        let subject = subjects::session(&self.tenant, &self.edge.edge_id);
        let result = async { self.edge.js.publish(subject, envelope::encode(&record)).await?.await }.await;
        if let Err(error) = result {
            tracing::warn!(%error, session_id = %self.session_id, "session audit not recorded");
        }
    }
}
