//! The hostile inputs, in one table every scheme's test reads: extreme times and
//! amounts, NULs, huge and deep JSON, repeated keys, and ids that are too long or
//! belong to another tenant. Each case says how a signed provider event is bent
//! ([`Fields`] changed, or the body text rewritten after it is built) and whether
//! ingest must refuse it with 400 or may store it. A test builds any scheme's event
//! with [`body`], signs it with [`sign`], and judges the answer by [`Case::refused`].

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The schemes ingest verifies, as their webhook URLs name them.
pub const SCHEMES: [&str; 3] = ["stdwebhooks", "razorpay", "stripe"];

/// A time beyond chrono's last date (year 262143) as Unix seconds.
pub const BEYOND_CHRONO: i64 = 8_210_298_412_800;
/// 9999-12-31T23:59:59Z, the last four-digit year: far future, yet representable.
pub const YEAR_9999: i64 = 253_402_300_799;

/// What the table varies in one provider event, scheme-neutral: each scheme puts
/// them where its provider does.
#[derive(Debug, Clone)]
pub struct Fields {
    /// The delivery (event) id.
    pub event_id: String,
    /// When it happened, Unix seconds (Stripe's `created`, Razorpay's
    /// `created_at`, Standard Webhooks' `timestamp` as RFC 3339 when representable).
    pub time: Value,
    /// The amount in minor units.
    pub amount: Value,
    /// paytrack's payment id (Stripe metadata, Razorpay notes, the data's field).
    pub payment_id: Value,
    /// The provider's reference.
    pub provider_ref: Value,
    /// An extra field placed in the provider's object (nesting, huge strings).
    pub extra: Option<Value>,
}

impl Fields {
    /// An ordinary succeeded event of `payment`, happening now.
    pub fn normal(event_id: &str, payment: &str) -> Fields {
        Fields {
            event_id: event_id.to_owned(),
            time: json!(chrono::Utc::now().timestamp()),
            amount: json!(1250),
            payment_id: json!(payment),
            provider_ref: json!(format!("ref_{payment}")),
            extra: None,
        }
    }
}

/// How a case bends an event.
#[derive(Clone)]
pub enum Bend {
    /// Changes the fields before the body is built.
    Fields(fn(&mut Fields, &Context)),
    /// Rewrites the body text after it is built (and before it is signed).
    Body(fn(String) -> String),
}

/// What a case may know of the world it runs in.
#[derive(Debug, Clone)]
pub struct Context {
    /// A payment id that belongs to another tenant.
    pub other_tenants_payment: String,
}

/// One hostile input.
#[derive(Clone)]
pub struct Case {
    /// What it is, for failure messages.
    pub name: &'static str,
    /// How it bends an ordinary event.
    pub bend: Bend,
    /// Whether every scheme must refuse it with 400 (else: 2xx or 4xx, never 5xx).
    pub refused: bool,
}

/// The ordinary event `fields` bent by every one of `cases` (field changes first,
/// then body rewrites), as `provider`'s body, with the event id to sign it with.
pub fn event(provider: &str, cases: &[&Case], mut fields: Fields, context: &Context) -> (String, String) {
    for case in cases {
        if let Bend::Fields(bend) = case.bend {
            bend(&mut fields, context);
        }
    }
    let mut text = body(provider, &fields);
    for case in cases {
        if let Bend::Body(rewrite) = case.bend {
            text = rewrite(text);
        }
    }
    (fields.event_id, text)
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!({ "n": inner }))
}

/// Every hostile input.
pub fn table() -> Vec<Case> {
    use Bend::{Body, Fields as F};
    let case = |name, bend, refused| Case { name, bend, refused };
    vec![
        // Times.
        case("time: i64::MIN", F(|f, _| f.time = json!(i64::MIN)), true),
        case("time: -1", F(|f, _| f.time = json!(-1)), true),
        case("time: 0 (1970)", F(|f, _| f.time = json!(0)), true),
        case("time: year 9999", F(|f, _| f.time = json!(YEAR_9999)), true),
        case("time: beyond chrono", F(|f, _| f.time = json!(BEYOND_CHRONO)), true),
        case("time: i64::MAX", F(|f, _| f.time = json!(i64::MAX)), true),
        case(
            "time: two days ahead",
            F(|f, _| f.time = json!(chrono::Utc::now().timestamp() + 2 * 86_400)),
            true,
        ),
        case("time: a string", F(|f, _| f.time = json!("yesterday")), true),
        case("time: a float", F(|f, _| f.time = json!(1.7e9)), true),
        // Amounts (a provider may send what it likes; paytrack never 5xx's on it).
        case("amount: -1", F(|f, _| f.amount = json!(-1)), false),
        case("amount: 0", F(|f, _| f.amount = json!(0)), false),
        case("amount: i64::MAX", F(|f, _| f.amount = json!(i64::MAX)), false),
        case("amount: u64::MAX", F(|f, _| f.amount = json!(u64::MAX)), false),
        case("amount: 1e300", F(|f, _| f.amount = json!(1e300)), false),
        case("amount: a string", F(|f, _| f.amount = json!("1250")), false),
        // Ids.
        case("provider_ref: empty", F(|f, _| f.provider_ref = json!("")), true),
        case(
            "provider_ref: 100k characters",
            F(|f, _| f.provider_ref = json!("r".repeat(100_000))),
            true,
        ),
        case(
            "provider_ref: 257 characters",
            F(|f, _| f.provider_ref = json!("r".repeat(257))),
            true,
        ),
        case(
            "provider_ref: 100k characters, payment unknown",
            F(|f, _| {
                f.payment_id = Value::Null;
                f.provider_ref = json!("r".repeat(100_000));
            }),
            true,
        ),
        case("provider_ref: NUL", F(|f, _| f.provider_ref = json!("r\u{0}r")), true),
        case(
            "provider_ref: a control character",
            F(|f, _| f.provider_ref = json!("r\u{1b}[31m")),
            true,
        ),
        case(
            "payment_id: 100k characters",
            F(|f, _| f.payment_id = json!("p".repeat(100_000))),
            false,
        ),
        case("payment_id: NUL", F(|f, _| f.payment_id = json!("p\u{0}p")), true),
        case(
            "payment_id: a subject wildcard",
            F(|f, _| f.payment_id = json!("p.>")),
            false,
        ),
        case(
            "payment_id: another tenant's",
            F(|f, c| f.payment_id = json!(c.other_tenants_payment)),
            false,
        ),
        case(
            "event id: 100k characters",
            F(|f, _| f.event_id = "e".repeat(100_000)),
            true,
        ),
        // JSON shapes.
        case("extra: a NUL", F(|f, _| f.extra = Some(json!("a\u{0}b"))), true),
        case("extra: nested 100 deep", F(|f, _| f.extra = Some(nested(100))), false),
        case("extra: nested 200 deep", F(|f, _| f.extra = Some(nested(200))), true),
        case(
            "extra: a 200 KB string",
            F(|f, _| f.extra = Some(json!("x".repeat(200_000)))),
            false,
        ),
        case(
            "body: a repeated key",
            Body(|b| b.replacen('{', "{\"dup\":1,\"dup\":2,", 1)),
            true,
        ),
        case(
            "body: payment_id given twice",
            Body(|b| b.replacen("\"payment_id\":", "\"payment_id\":\"pay_first\",\"payment_id\":", 1)),
            true,
        ),
        case("body: not JSON", Body(|b| format!("{b}}}")), true),
        case("body: empty", Body(|_| String::new()), true),
    ]
}

/// `fields` as `provider` sends them.
pub fn body(provider: &str, f: &Fields) -> String {
    let extra = f.extra.clone().unwrap_or(Value::Null);
    let value = match provider {
        "stdwebhooks" => {
            // Standard Webhooks' body carries RFC 3339; a number that is no date is
            // sent as it came, which is as hostile.
            let time = f
                .time
                .as_i64()
                .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
                .map_or(f.time.clone(), |at| json!(at.to_rfc3339()));
            json!({
                "type": "payment.succeeded", "timestamp": time,
                "data": {"payment_id": f.payment_id, "provider_ref": f.provider_ref,
                         "amount_minor": f.amount, "currency": "USD", "merchant_id": "m_1", "extra": extra},
            })
        }
        "razorpay" => json!({
            "entity": "event", "account_id": "acc_test", "event": "payment.captured",
            "contains": ["payment"],
            "payload": {"payment": {"entity": {"id": f.provider_ref, "entity": "payment",
                "amount": f.amount, "currency": "INR", "status": "captured", "method": "upi",
                "notes": {"payment_id": f.payment_id, "merchant_id": "m_1"}, "extra": extra}}},
            "created_at": f.time,
        }),
        _ => json!({
            "id": f.event_id, "object": "event", "created": f.time, "type": "payment_intent.succeeded",
            "data": {"object": {"id": f.provider_ref, "object": "payment_intent", "amount": f.amount,
                "currency": "usd", "metadata": {"payment_id": f.payment_id}, "extra": extra}},
        }),
    };
    value.to_string()
}

/// The headers that sign `body` for `provider` with `secret`, now.
pub fn sign(provider: &str, secret: &str, event_id: &str, body: &str) -> anyhow::Result<Vec<(String, String)>> {
    sign_at(provider, secret, event_id, body, chrono::Utc::now().timestamp())
}

/// The headers that sign `body` for `provider` with `secret` at the Unix time `ts`
/// (Standard Webhooks and Stripe sign it; Razorpay signs the body alone).
pub fn sign_at(
    provider: &str,
    secret: &str,
    event_id: &str,
    body: &str,
    ts: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    Ok(match provider {
        "stdwebhooks" => {
            let signature = standardwebhooks::Webhook::new(secret)?.sign(event_id, ts, body.as_bytes())?;
            vec![
                ("webhook-id".into(), event_id.into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), signature),
            ]
        }
        "razorpay" => vec![
            ("x-razorpay-signature".into(), hmac_hex(secret, &[body.as_bytes()])),
            ("x-razorpay-event-id".into(), event_id.into()),
        ],
        _ => {
            let t = ts.to_string();
            let signature = hmac_hex(secret, &[t.as_bytes(), b".", body.as_bytes()]);
            vec![("stripe-signature".into(), format!("t={t},v1={signature}"))]
        }
    })
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Posts a signed `body` to `tenant`'s `provider` endpoint at `ingest`; the status
/// and the JSON answer (null when there is none).
pub async fn post(
    http: &reqwest::Client,
    ingest: &str,
    tenant: &str,
    provider: &str,
    headers: &[(String, String)],
    body: String,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http
        .post(format!("{ingest}/v1/webhooks/{tenant}/{provider}"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}
