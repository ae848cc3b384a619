//! The provider simulator's ground truth (`GET /v1/ground-truth`): what it decided
//! for each payment, which tests compare paytrack's view against.

use serde_json::Value;

/// Every payment the simulator at `sim` knows, as its JSON objects; None while the
/// simulator does not answer, so a test polls it with `eventually`.
pub async fn payments(http: &reqwest::Client, sim: &str) -> Option<Vec<Value>> {
    let all: Value = http
        .get(format!("{sim}/v1/ground-truth"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    all["payments"].as_array().cloned()
}

/// The simulator's ground truth for `payment`; None while it has none.
pub async fn of_payment(http: &reqwest::Client, sim: &str, payment: &str) -> Option<Value> {
    payments(http, sim)
        .await?
        .into_iter()
        .find(|p| p["payment_id"] == payment)
}
