//! Event bodies in each sandbox provider's own shape, from a payment and the
//! provider status it moved to.

use serde_json::{Value, json};

use crate::gateway::Payment;

/// The provider's event type for a provider status, if it sends one for it.
pub fn event_type(provider: &str, status: &str) -> Option<&'static str> {
    let table: &[(&str, &str)] = match provider {
        "stdwebhooks" => &[
            ("pending", "payment.pending"),
            ("held", "payment.held"),
            ("succeeded", "payment.succeeded"),
            ("failed", "payment.failed"),
            ("cancelled", "payment.cancelled"),
            ("returned", "payment.returned"),
        ],
        "razorpay" => &[
            ("pending", "payment.authorized"),
            ("succeeded", "payment.captured"),
            ("failed", "payment.failed"),
            ("returned", "refund.processed"),
        ],
        "stripe" => &[
            ("pending", "payment_intent.processing"),
            ("succeeded", "payment_intent.succeeded"),
            ("failed", "payment_intent.payment_failed"),
            ("cancelled", "payment_intent.canceled"),
            ("returned", "charge.refunded"),
        ],
        _ => &[],
    };
    table.iter().find(|(s, _)| *s == status).map(|(_, t)| *t)
}

/// Razorpay's payout event for a provider status of a payout.
pub fn payout_event_type(status: &str) -> Option<&'static str> {
    let table: &[(&str, &str)] = &[
        ("pending", "payout.queued"),
        ("succeeded", "payout.processed"),
        ("failed", "payout.failed"),
        ("returned", "payout.reversed"),
    ];
    table.iter().find(|(s, _)| *s == status).map(|(_, t)| *t)
}

/// The body of a Razorpay payout's event for `status` (`payload.payout.entity`).
fn payout_body(payment: &Payment, status: &str, now: i64, notes: Value) -> Option<Value> {
    let event_type = payout_event_type(status)?;
    let entity_status = match status {
        "pending" => "queued",
        "succeeded" => "processed",
        "returned" => "reversed",
        other => other,
    };
    let paid = matches!(status, "succeeded" | "returned");
    let entity = json!({
        "id": payment.provider_ref,
        "entity": "payout",
        "fund_account_id": "fa_sandbox",
        "amount": payment.amount_minor,
        "currency": payment.currency,
        "status": entity_status,
        "mode": payment.rail.to_ascii_uppercase(),
        "purpose": "payout",
        "reference_id": payment.payment_id,
        "notes": notes,
        "utr": if paid { json!(format!("UTR{}", payment.created_at)) } else { Value::Null },
        "failure_reason": match status {
            "failed" => json!("Beneficiary bank is offline"),
            "returned" => json!("Beneficiary account is closed"),
            _ => Value::Null,
        },
        "created_at": payment.created_at,
    });
    Some(json!({
        "entity": "event",
        "account_id": "acc_sandbox",
        "event": event_type,
        "contains": ["payout"],
        "payload": { "payout": { "entity": entity } },
        "created_at": now,
    }))
}

/// A new delivery id in the provider's style.
pub fn delivery_id(provider: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    match provider {
        "stdwebhooks" => format!("msg_{}", &random[..24]),
        _ => format!("evt_{}", &random[..24]),
    }
}

/// The sandbox's fee for a payment: 2% of the amount, rounded down, as a provider
/// would report it on the captured payment (so the ledger's fee postings have data).
pub fn fee_of(amount_minor: i64) -> i64 {
    amount_minor.max(0) / 50
}

/// The body of `payment`'s event for `status`, delivered as `delivery_id` at `now`.
/// Metadata naming the paytrack payment is included when `metadata` is true (the
/// generic stdwebhooks format always names it).
pub fn body(payment: &Payment, status: &str, delivery_id: &str, now: i64, metadata: bool) -> Option<String> {
    let notes = if metadata {
        let mut notes = json!({ "payment_id": payment.payment_id });
        if let Some(m) = &payment.merchant_id {
            notes["merchant_id"] = json!(m);
        }
        notes
    } else {
        json!({})
    };
    if payment.payout {
        let notes = if metadata { notes } else { json!([]) };
        return payout_body(payment, status, now, notes).map(|v| v.to_string());
    }
    let event_type = event_type(&payment.provider, status)?;
    let value: Value = match payment.provider.as_str() {
        "stdwebhooks" => {
            let mut data = json!({
                "payment_id": payment.payment_id,
                "provider_ref": payment.provider_ref,
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
                "rail": payment.rail,
            });
            if let Some(m) = &payment.merchant_id {
                data["merchant_id"] = json!(m);
            }
            if status == "failed" {
                data["reason"] = json!("card_declined");
            }
            if status == "succeeded" {
                data["fee_minor"] = json!(fee_of(payment.amount_minor));
            }
            json!({
                "type": event_type,
                "timestamp": chrono::DateTime::<chrono::Utc>::from_timestamp(now, 0).unwrap_or_default().to_rfc3339(),
                "data": data,
            })
        }
        "razorpay" => {
            // Razorpay sends `"notes": []` when there are none.
            let notes = if metadata { notes } else { json!([]) };
            let entity_status = match status {
                "pending" => "authorized",
                "succeeded" | "returned" => "captured",
                other => other,
            };
            let mut entity = json!({
                "id": payment.provider_ref,
                "entity": "payment",
                "amount": payment.amount_minor,
                "currency": payment.currency,
                "status": entity_status,
                "method": payment.rail,
                "notes": notes,
                "error_description": if status == "failed" { json!("Payment processing failed because of incorrect OTP") } else { Value::Null },
                // Razorpay reports its fee (tax included) once the payment is captured.
                "fee": if entity_status == "captured" { json!(fee_of(payment.amount_minor)) } else { Value::Null },
                "created_at": payment.created_at,
            });
            let mut payload = json!({ "payment": { "entity": entity.take() } });
            let mut contains = vec!["payment"];
            if status == "returned" {
                payload["refund"] = json!({ "entity": {
                    "id": format!("rfnd_{}", delivery_id.trim_start_matches("evt_")),
                    "entity": "refund",
                    "payment_id": payment.provider_ref,
                    "amount": payment.amount_minor,
                    "currency": payment.currency,
                    "notes": [],
                    "created_at": now,
                }});
                contains.insert(0, "refund");
            }
            json!({
                "entity": "event",
                "account_id": "acc_sandbox",
                "event": event_type,
                "contains": contains,
                "payload": payload,
                "created_at": now,
            })
        }
        _ => {
            let object = if status == "returned" {
                json!({
                    "id": format!("ch_{}", payment.provider_ref.trim_start_matches("pi_")),
                    "object": "charge",
                    "payment_intent": payment.provider_ref,
                    "amount": payment.amount_minor,
                    "amount_refunded": payment.amount_minor,
                    "currency": payment.currency.to_ascii_lowercase(),
                    "metadata": notes,
                    "created": payment.created_at,
                })
            } else {
                let mut object = json!({
                    "id": payment.provider_ref,
                    "object": "payment_intent",
                    "amount": payment.amount_minor,
                    "currency": payment.currency.to_ascii_lowercase(),
                    "metadata": notes,
                    "created": payment.created_at,
                    "payment_method_types": [match payment.rail.as_str() {
                        "ach_debit" => "us_bank_account",
                        other => other,
                    }],
                    "status": match status {
                        "pending" => "processing",
                        "failed" => "requires_payment_method",
                        "cancelled" => "canceled",
                        other => other,
                    },
                });
                if status == "failed" {
                    object["last_payment_error"] =
                        json!({ "code": "card_declined", "message": "Your card was declined." });
                }
                object
            };
            json!({
                "id": delivery_id,
                "object": "event",
                "api_version": "2024-06-20",
                "created": now,
                "livemode": false,
                "type": event_type,
                "data": { "object": object },
            })
        }
    };
    Some(value.to_string())
}

/// The event type a provider sends for a refund or dispute reaching `state`.
pub fn movement_event_type(provider: &str, kind: &str, state: &str) -> Option<&'static str> {
    let table: &[(&str, &str, &str)] = match provider {
        "stdwebhooks" => &[
            ("refund", "pending", "payment.refund.pending"),
            ("refund", "succeeded", "payment.refund.succeeded"),
            ("refund", "failed", "payment.refund.failed"),
            ("dispute", "opened", "payment.dispute.opened"),
            ("dispute", "won", "payment.dispute.won"),
            ("dispute", "lost", "payment.dispute.lost"),
        ],
        "razorpay" => &[
            ("refund", "pending", "refund.created"),
            ("refund", "succeeded", "refund.processed"),
            ("refund", "failed", "refund.failed"),
            ("dispute", "opened", "payment.dispute.created"),
            ("dispute", "won", "payment.dispute.won"),
            ("dispute", "lost", "payment.dispute.lost"),
        ],
        "stripe" => &[
            ("refund", "pending", "refund.created"),
            ("refund", "succeeded", "refund.updated"),
            ("refund", "failed", "refund.failed"),
            ("dispute", "opened", "charge.dispute.created"),
            ("dispute", "won", "charge.dispute.closed"),
            ("dispute", "lost", "charge.dispute.closed"),
        ],
        _ => &[],
    };
    table
        .iter()
        .find(|(k, s, _)| *k == kind && *s == state)
        .map(|(_, _, t)| *t)
}

/// The body of the event for `payment`'s refund or dispute `id` of `amount_minor`
/// reaching `state`, in the provider's own shape.
#[allow(clippy::too_many_arguments)]
pub fn movement_body(
    payment: &Payment,
    kind: &str,
    id: &str,
    amount_minor: i64,
    state: &str,
    delivery_id: &str,
    now: i64,
    metadata: bool,
) -> Option<String> {
    let event_type = movement_event_type(&payment.provider, kind, state)?;
    let notes = if metadata {
        let mut notes = json!({ "payment_id": payment.payment_id });
        if let Some(m) = &payment.merchant_id {
            notes["merchant_id"] = json!(m);
        }
        notes
    } else {
        json!({})
    };
    let value = match payment.provider.as_str() {
        "stdwebhooks" => {
            let mut body: Value =
                serde_json::from_str(&body(payment, "succeeded", delivery_id, now, metadata)?).ok()?;
            body["type"] = json!(event_type);
            if let Some(data) = body["data"].as_object_mut() {
                data.remove("fee_minor");
                data.insert("movement".into(), json!({"id": id, "amount_minor": amount_minor}));
            }
            body
        }
        "razorpay" => {
            let payment_entity = json!({
                "id": payment.provider_ref, "entity": "payment", "amount": payment.amount_minor,
                "currency": payment.currency, "status": "captured", "method": payment.rail,
                "notes": if metadata { notes.clone() } else { json!([]) }, "created_at": payment.created_at,
            });
            let entity = json!({
                "id": id, "entity": kind, "amount": amount_minor, "currency": payment.currency,
                "payment_id": payment.provider_ref, "status": state, "notes": [], "created_at": now,
            });
            json!({
                "entity": "event", "account_id": "acc_sandbox", "event": event_type,
                "contains": [kind, "payment"],
                "payload": { kind: { "entity": entity }, "payment": { "entity": payment_entity } },
                "created_at": now,
            })
        }
        _ => {
            let object = if kind == "refund" {
                json!({
                    "id": id, "object": "refund", "amount": amount_minor,
                    "currency": payment.currency.to_ascii_lowercase(), "status": state,
                    "payment_intent": payment.provider_ref,
                    "charge": format!("ch_{}", payment.provider_ref.trim_start_matches("pi_")),
                    "metadata": notes, "created": now,
                })
            } else {
                json!({
                    "id": id, "object": "dispute", "amount": amount_minor,
                    "currency": payment.currency.to_ascii_lowercase(),
                    "status": if state == "opened" { "needs_response" } else { state },
                    "reason": "fraudulent", "payment_intent": payment.provider_ref,
                    "charge": format!("ch_{}", payment.provider_ref.trim_start_matches("pi_")),
                    "metadata": notes, "created": now,
                })
            };
            json!({
                "id": delivery_id, "object": "event", "api_version": "2024-06-20", "created": now,
                "livemode": false, "type": event_type, "data": { "object": object },
            })
        }
    };
    Some(value.to_string())
}
