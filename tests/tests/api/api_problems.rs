//! Error answers are RFC 9457 problem bodies on every HTTP surface, and commands
//! are checked against the payment's current status before they are recorded, on
//! the whole mesh (real NATS and PostgreSQL).

use std::time::Duration;

use futures::TryStreamExt;
use paytrack_shared::subjects;
use paytrack_tests::Mesh;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?)
}

/// The status, the content type and the body of `response`.
async fn read(response: reqwest::Response) -> anyhow::Result<(u16, String, Value)> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, content_type, body))
}

/// Asserts that an answer is a problem of `code` with `status`.
fn assert_problem(answer: &(u16, String, Value), status: u16, code: &str, what: &str) {
    let (got, content_type, body) = answer;
    assert_eq!(*got, status, "{what}: {body}");
    assert_eq!(content_type, "application/problem+json", "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert_eq!(body["status"], status, "{what}: {body}");
    assert_eq!(
        body["type"],
        format!("https://paytrack.dev/problems/{code}"),
        "{what}: {body}"
    );
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{what}: {body}");
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()), "{what}: {body}");
}

/// Messages of PAYTRACK_IN about `payment`.
async fn inbound_about(mesh: &Mesh, payment: &str) -> anyhow::Result<usize> {
    let stream = mesh.js.get_stream(subjects::STREAM_IN).await?;
    let mut subjects = stream
        .info_with_subjects(format!("paytrack.in.{}.{payment}", mesh.tenant))
        .await?;
    let mut count = 0;
    while let Some((_, n)) = subjects.try_next().await? {
        count += n;
    }
    Ok(count)
}

async fn create(mesh: &Mesh, client: &reqwest::Client, key: &str) -> anyhow::Result<String> {
    let body = json!({
        "merchant_id": "m_p", "amount_minor": 1250, "currency": "USD", "rail": "card", "country": "US",
    });
    let response = client
        .post(format!("{}/v1/payments", mesh.ingest_url))
        .bearer_auth(mesh.operator_token())
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await?;
    let (status, _, body) = read(response).await?;
    assert_eq!(status, 201, "{body}");
    Ok(body["payment_id"].as_str().unwrap_or_default().to_owned())
}

async fn command(
    mesh: &Mesh,
    client: &reqwest::Client,
    payment: &str,
    name: &str,
    body: &str,
) -> anyhow::Result<(u16, String, Value, Option<String>)> {
    let response = client
        .post(format!("{}/v1/payments/{payment}/{name}", mesh.ingest_url))
        .bearer_auth(mesh.operator_token())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, content_type, body) = read(response).await?;
    Ok((status, content_type, body, location))
}

/// Unknown routes, wrong methods, malformed bodies and refused credentials answer
/// problem bodies with one code per mistake, on ingest and on the edge (its SSE and
/// WebSocket upgrade refusals included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_problem_body_with_one_code_per_mistake() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let client = http()?;
    let token = mesh.operator_token();
    let edge = format!("http://{}", mesh.edge_addr);

    let answer = read(client.get(format!("{}/v1/nowhere", mesh.ingest_url)).send().await?).await?;
    assert_problem(&answer, 404, "not_found", "ingest unknown route");
    let answer = read(client.delete(format!("{}/v1/payments", mesh.ingest_url)).send().await?).await?;
    assert_problem(&answer, 405, "method_not_allowed", "ingest wrong method");
    let answer = read(
        client
            .post(format!("{}/v1/payments", mesh.ingest_url))
            .bearer_auth(&token)
            .header("idempotency-key", "k-1")
            .body("{not json")
            .send()
            .await?,
    )
    .await?;
    assert_problem(&answer, 400, "invalid_request", "ingest malformed create");
    // A malformed webhook body is the same mistake as a malformed command body.
    let body = "{not json";
    let answer = read(mesh.post_webhook("d-malformed", body).await?).await?;
    assert_problem(&answer, 400, "invalid_request", "ingest malformed webhook");
    let answer = read(client.get(format!("{}/v1/payments", mesh.ingest_url)).send().await?).await?;
    assert_problem(&answer, 401, "unauthorized", "ingest without credential");
    let answer = read(mesh.get("/v1/payments/pay_none", &token).await?).await?;
    assert_problem(&answer, 404, "not_found", "ingest unknown payment");

    let answer = read(client.get(format!("{edge}/v1/nowhere")).send().await?).await?;
    assert_problem(&answer, 404, "not_found", "edge unknown route");
    let answer = read(client.post(format!("{edge}/v1/sse")).send().await?).await?;
    assert_problem(&answer, 405, "method_not_allowed", "edge wrong method");
    let answer = read(client.get(format!("{edge}/v1/ws")).send().await?).await?;
    assert_problem(&answer, 401, "unauthorized", "edge upgrade without token");
    let answer = read(client.get(format!("{edge}/v1/ws")).bearer_auth(&token).send().await?).await?;
    assert_problem(&answer, 400, "invalid_request", "edge upgrade that is no upgrade");
    let answer = read(
        client
            .get(format!("{edge}/v1/sse?channel=nonsense"))
            .bearer_auth(&token)
            .send()
            .await?,
    )
    .await?;
    assert_problem(&answer, 400, "invalid_request", "edge sse unknown channel");
    let answer = read(
        client
            .get(format!("{edge}/v1/presence/bad%20user"))
            .bearer_auth(&token)
            .send()
            .await?,
    )
    .await?;
    assert_problem(&answer, 400, "invalid_request", "edge presence bad user");
    Ok(())
}

/// A cancel the payment's status forbids answers 409 with a problem body naming the
/// status, and nothing reaches PAYTRACK_IN; a resolve without a reason is 422; an
/// allowed cancel answers 202 saying how to watch for its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_command_is_refused_before_it_is_recorded() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let client = http()?;
    let settled = create(&mesh, &client, "settled-1").await?;
    let open = create(&mesh, &client, "open-1").await?;
    let response = mesh
        .post_webhook("d-settled", &Mesh::webhook_body(&settled, "succeeded", "m_p"))
        .await?;
    assert!(response.status().is_success(), "{}", response.text().await?);
    mesh.eventually(WAIT, "the success is projected", || async {
        let response = mesh
            .get(&format!("/v1/payments/{settled}"), &mesh.operator_token())
            .await
            .ok()?;
        let (_, _, body) = read(response).await.ok()?;
        (body["status"] == "succeeded").then_some(())
    })
    .await?;
    let open_seen = mesh
        .eventually(WAIT, "the open payment is projected", || async {
            let response = mesh
                .get(&format!("/v1/payments/{open}"), &mesh.operator_token())
                .await
                .ok()?;
            let (status, _, body) = read(response).await.ok()?;
            (status == 200).then_some(body)
        })
        .await?;
    assert_eq!(open_seen["status"], "initiated");

    let before = inbound_about(&mesh, &settled).await?;
    let (status, content_type, body, _) = command(&mesh, &client, &settled, "cancel", "").await?;
    assert_problem(
        &(status, content_type, body.clone()),
        409,
        "state_conflict",
        "cancel after success",
    );
    assert_eq!(body["payment_status"], "succeeded", "{body}");
    assert_eq!(body["command"], "cancel", "{body}");
    let (status, content_type, body, _) = command(&mesh, &client, &settled, "retry", "").await?;
    assert_problem(
        &(status, content_type, body),
        409,
        "state_conflict",
        "retry after success",
    );
    let resolve = json!({"status": "failed", "reason": "checked with the bank"}).to_string();
    let (status, content_type, body, _) = command(&mesh, &client, &settled, "resolve", &resolve).await?;
    assert_problem(
        &(status, content_type, body),
        409,
        "state_conflict",
        "resolve of no investigation",
    );
    let (status, content_type, body, _) = command(
        &mesh,
        &client,
        &settled,
        "resolve",
        &json!({"status": "failed"}).to_string(),
    )
    .await?;
    assert_problem(
        &(status, content_type, body),
        422,
        "invalid_reason",
        "resolve without reason",
    );
    assert_eq!(
        inbound_about(&mesh, &settled).await?,
        before,
        "a refused command was recorded"
    );

    let (status, _, body, location) = command(&mesh, &client, &open, "cancel", "").await?;
    assert_eq!(status, 202, "{body}");
    let timeline = format!("/v1/payments/{open}/timeline");
    assert_eq!(body["watch"]["channel"], format!("payment:{open}"), "{body}");
    assert_eq!(body["watch"]["timeline"], timeline, "{body}");
    assert_eq!(location.as_deref(), Some(timeline.as_str()));
    mesh.eventually(WAIT, "the cancel is applied", || async {
        let (_, statuses) = mesh.timeline(&open).await.ok()?;
        statuses.iter().any(|s| s == "cancelled").then_some(())
    })
    .await?;
    Ok(())
}

/// A command the pre-check cannot judge (the projection does not hold the payment
/// yet) is recorded, and when the reconciler refuses it, the timeline shows it as
/// refused: the 202's `watch.timeline` is where that shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_projection_cannot_judge_yet_shows_as_refused_in_the_timeline() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let client = http()?;
    let mut accepted = Value::Null;
    mesh.restart_projector(async {
        // The projector is down: the payment exists, the projection does not know it.
        let payment = create(&mesh, &client, "unjudged-1").await?;
        let resolve = json!({"status": "failed", "reason": "checked with the bank"}).to_string();
        let (status, _, body, _) = command(&mesh, &client, &payment, "resolve", &resolve).await?;
        assert_eq!(status, 202, "{body}");
        accepted = body;
        Ok(())
    })
    .await?;
    let timeline = accepted["watch"]["timeline"].as_str().unwrap_or_default().to_owned();
    let fact_id = accepted["fact_id"].as_str().unwrap_or_default().to_owned();
    let refused = mesh
        .eventually(WAIT, "the resolve shows as refused", || async {
            let response = mesh.get(&timeline, &mesh.operator_token()).await.ok()?;
            let (_, _, entries) = read(response).await.ok()?;
            entries
                .as_array()?
                .iter()
                .find(|e| e["fact_id"] == fact_id.as_str() && e["outcome"] == "refused")
                .cloned()
        })
        .await?;
    assert!(refused["reason"].as_str().is_some_and(|r| !r.is_empty()), "{refused}");
    Ok(())
}
