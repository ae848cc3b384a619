//! A payment's current state as the projection holds it: the fields that
//! `GET /v1/payments/{id}` and each item of `GET /v1/payments` both show, read from
//! one row of `payments`.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A payment's current state: its status, finality, money and when it changed.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PaymentState {
    /// The payment.
    pub payment_id: String,
    /// Its merchant.
    pub merchant_id: String,
    /// Current canonical status.
    pub status: String,
    /// Version of that status (1 for the first transition).
    pub version: i64,
    /// PAYTRACK_STATUS sequence of the transition.
    pub seq: i64,
    /// Whether the status is final (terminal, persisted and posted to the ledger).
    #[serde(rename = "final")]
    #[sqlx(rename = "final")]
    pub is_final: bool,
    /// Why it is not final (null when it is): `not_terminal`, `rail_unknown`,
    /// `return_window_open_until:<time>`, `ledger_unpostable`, `awaiting_persisted`
    /// or `awaiting_ledger_posted`.
    pub not_final_because: Option<String>,
    /// `payin` (money in from a payer) or `payout` (money out to a merchant or
    /// beneficiary).
    pub direction: String,
    /// A payout's status in its own words (`initiated`, `pending`, `paid`, `failed`,
    /// `returned`, `cancelled`); null for a payment.
    pub payout_status: Option<String>,
    /// Amount in minor units, when known.
    pub amount_minor: Option<i64>,
    /// The provider handling it, when known.
    pub provider: Option<String>,
    /// ISO 4217, when known.
    pub currency: Option<String>,
    /// The rail (decides finality), when known.
    pub rail: Option<String>,
    /// Where the money is, in minor units: `authorised_minor`, `captured_minor`,
    /// `refunded_minor`, `returned_minor`, `disputed_minor` (withheld by open or lost
    /// disputes), `net_minor` and `refunded` (fully refunded), and a payout's
    /// `paid_minor`; null for a payment projected before amounts existed.
    pub amounts: Option<serde_json::Value>,
    /// How much of the net amount refunds and disputes may still take back: the net
    /// while the rail's refund and dispute windows are open, else 0.
    pub at_risk_minor: i64,
    /// Until when it is at risk (null: nothing is).
    pub at_risk_until: Option<DateTime<Utc>>,
    /// When the cause happened.
    pub occurred_at: DateTime<Utc>,
    /// When the projection last changed.
    pub updated_at: DateTime<Utc>,
}
