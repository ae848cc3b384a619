//! `paytrack create-payment`: `POST /v1/payments` with an `Idempotency-Key`, printing
//! the payment made and the provider it was routed to.

use serde_json::Value;

use crate::cli::api::Api;
use crate::cli::output::{Output, cell, money};

/// Creates the payment `body` describes.
pub async fn run(api: &Api, body: Value, idempotency_key: &str, out: Output) -> anyhow::Result<()> {
    let (status, created) = api.post("/v1/payments", &body, Some(idempotency_key)).await?;
    out.emit(&created, |c| {
        format!(
            "HTTP {status}: payment {} {} ({}), routed to {}\n  watch it with: paytrack tail payment:{}",
            cell(&c["payment_id"]),
            cell(&c["status"]),
            money(&c["amount_minor"], &c["currency"]),
            cell(&c["routing"]["provider"]),
            cell(&c["payment_id"])
        )
    })
}
