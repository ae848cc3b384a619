//! The payments list: newest first, filtered, paged by an opaque cursor that neither
//! repeats nor skips a payment that moves, and strict about its parameters, on the
//! whole mesh (real NATS and PostgreSQL).

use std::time::Duration;

use paytrack_tests::Mesh;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// `GET /v1/payments?{query}` as an operator: status and body.
async fn list(mesh: &Mesh, query: &str) -> anyhow::Result<(u16, Value)> {
    let response = mesh
        .get(&format!("/v1/payments?{query}"), &mesh.operator_token())
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// The payment ids of a 200 list answer.
async fn ids(mesh: &Mesh, query: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = list(mesh, query).await?;
    anyhow::ensure!(status == 200, "{query}: {status} {body}");
    Ok(body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["payment_id"].as_str().map(str::to_owned))
        .collect())
}

async fn create(mesh: &Mesh, merchant: &str, amount: i64, country: &str, currency: &str) -> anyhow::Result<String> {
    let body = json!({
        "merchant_id": merchant, "amount_minor": amount, "currency": currency, "rail": "card", "country": country,
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v1/payments", mesh.ingest_url))
        .bearer_auth(mesh.operator_token())
        .header("idempotency-key", format!("{merchant}-{amount}"))
        .json(&body)
        .send()
        .await?;
    let body: Value = response.json().await?;
    body["payment_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no payment_id: {body}"))
}

/// Every page of `query` (with `limit=2`), following `next_cursor`.
async fn pages(mesh: &Mesh, query: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("{query}&limit=2");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = list(mesh, &q).await?;
        anyhow::ensure!(status == 200, "{q}: {status} {body}");
        pages.push(
            body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["payment_id"].as_str().map(str::to_owned))
                .collect(),
        );
        anyhow::ensure!(body.get("position").is_some(), "the list keeps its position: {body}");
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(pages),
        }
        anyhow::ensure!(pages.len() < 20, "the cursor never ends");
    }
}

/// Seven payments listed newest first, each filter narrowing them, and the cursor
/// paging them over four pages while one of them moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_newest_first_filtered_and_paged_by_a_stable_cursor() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let mut created = Vec::new();
    for (i, merchant) in ["m_a", "m_a", "m_a", "m_a", "m_b", "m_b"].iter().enumerate() {
        let id = create(&mesh, merchant, 100 * (i as i64 + 1), "US", "USD").await?;
        // One at a time into the projection, so their creation times differ.
        mesh.eventually(WAIT, "the payment is projected", || async {
            let response = mesh
                .get(&format!("/v1/payments/{id}"), &mesh.operator_token())
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await?;
        created.push(id);
    }
    let pound = create(&mesh, "m_b", 700, "GB", "GBP").await?;
    created.push(pound.clone());
    mesh.eventually(WAIT, "all seven are listed", || async {
        let listed = ids(&mesh, "").await.ok()?;
        (listed.len() == 7).then_some(())
    })
    .await?;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(ids(&mesh, "").await?, newest_first, "newest first by default");
    assert_eq!(ids(&mesh, "order=-created_at").await?, newest_first);
    assert_eq!(ids(&mesh, "order=created_at").await?, created, "oldest first");

    // Paging: four pages of at most two, each payment once, while one moves.
    let before_move = chrono::Utc::now();
    let mut seen = Vec::new();
    let (_, first) = list(&mesh, "limit=2").await?;
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    seen.extend(
        first["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["payment_id"].as_str().map(str::to_owned)),
    );
    let moved = created[0].clone();
    let response = mesh
        .post_webhook("d-moved", &Mesh::webhook_body(&moved, "succeeded", "m_a"))
        .await?;
    assert!(response.status().is_success());
    mesh.eventually(WAIT, "the move is projected", || async {
        let listed = ids(&mesh, "status=succeeded").await.ok()?;
        (listed == vec![moved.clone()]).then_some(())
    })
    .await?;
    let mut cursor = Some(cursor);
    let mut count = 1;
    while let Some(c) = cursor.take() {
        let (status, body) = list(&mesh, &format!("limit=2&cursor={c}")).await?;
        assert_eq!(status, 200, "{body}");
        seen.extend(
            body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["payment_id"].as_str().map(str::to_owned)),
        );
        cursor = body["next_cursor"].as_str().map(str::to_owned);
        count += 1;
    }
    assert_eq!(count, 4, "seven payments in pages of two");
    assert_eq!(seen, newest_first, "no payment repeated or skipped");
    let by_change = pages(&mesh, "order=-updated_at").await?;
    assert_eq!(by_change.concat().len(), 7);
    assert_eq!(by_change[0][0], moved, "the moved payment changed last");

    // Filters.
    assert_eq!(ids(&mesh, "status=succeeded").await?, vec![moved.clone()]);
    assert_eq!(ids(&mesh, "status=initiated,succeeded").await?.len(), 7);
    assert_eq!(ids(&mesh, "status=initiated&status=succeeded").await?.len(), 7);
    assert_eq!(ids(&mesh, "status=failed").await?.len(), 0);
    assert_eq!(ids(&mesh, "merchant=m_b").await?, newest_first[..3].to_vec());
    assert_eq!(
        ids(&mesh, "merchant_id=m_b").await?.len(),
        3,
        "the edge's reload spelling"
    );
    let (_, all) = list(&mesh, "").await?;
    let provider = all["items"][0]["provider"].as_str().unwrap_or_default().to_owned();
    assert!(!provider.is_empty(), "{all}");
    let routed_there: Vec<String> = all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["provider"] == provider.as_str())
        .filter_map(|i| i["payment_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids(&mesh, &format!("provider={provider}")).await?, routed_there);
    assert_eq!(ids(&mesh, "provider=nobody").await?.len(), 0);
    assert_eq!(ids(&mesh, "rail=card").await?.len(), 7);
    assert_eq!(ids(&mesh, "rail=ach_debit").await?.len(), 0);
    assert_eq!(ids(&mesh, "direction=payin").await?.len(), 7);
    assert_eq!(ids(&mesh, "direction=payout").await?.len(), 0);
    assert_eq!(
        ids(&mesh, "amount_min=300&amount_max=500").await?,
        vec![created[4].clone(), created[3].clone(), created[2].clone()]
    );
    assert_eq!(ids(&mesh, "amount_min=700").await?, vec![pound.clone()]);
    assert_eq!(ids(&mesh, "currency=GBP").await?, vec![pound.clone()]);
    let created_at = |i: usize| {
        all["items"][6 - i]["created_at"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let encode = |t: String| t.replace('+', "%2B");
    assert_eq!(
        ids(&mesh, &format!("created_after={}", encode(created_at(4)))).await?,
        newest_first[..2].to_vec()
    );
    assert_eq!(
        ids(&mesh, &format!("created_before={}", encode(created_at(1)))).await?,
        vec![created[0].clone()]
    );
    let before_move = encode(before_move.to_rfc3339());
    assert_eq!(
        ids(&mesh, &format!("updated_after={before_move}")).await?,
        vec![moved.clone()]
    );
    assert_eq!(ids(&mesh, &format!("updated_before={before_move}")).await?.len(), 6);
    assert_eq!(
        ids(&mesh, &format!("q={}", created[2])).await?,
        vec![created[2].clone()]
    );
    let view: Value = mesh
        .get(&format!("/v1/payments/{}", created[3]), &mesh.operator_token())
        .await?
        .json()
        .await?;
    let trace = view["trace_id"].as_str().unwrap_or_default();
    assert_eq!(ids(&mesh, &format!("q={trace}")).await?, vec![created[3].clone()]);
    assert_eq!(ids(&mesh, "q=nothing_like_it").await?.len(), 0);

    // Bad parameters: 400 problems naming the parameter.
    let other_order_cursor = first["next_cursor"].as_str().unwrap_or_default();
    for (query, parameter) in [
        ("colour=red".to_owned(), "colour"),
        ("status=bogus".to_owned(), "status"),
        ("merchant=not%20an%20id".to_owned(), "merchant"),
        ("provider=Stripe!".to_owned(), "provider"),
        ("rail=".to_owned(), "rail"),
        ("direction=sideways".to_owned(), "direction"),
        ("amount_min=-5".to_owned(), "amount_min"),
        ("amount_max=lots".to_owned(), "amount_max"),
        ("amount_min=9&amount_max=1".to_owned(), "amount_min"),
        ("currency=usd".to_owned(), "currency"),
        ("created_after=yesterday".to_owned(), "created_after"),
        ("created_before=2026-02-30T00:00:00Z".to_owned(), "created_before"),
        ("updated_after=12".to_owned(), "updated_after"),
        ("updated_before=now".to_owned(), "updated_before"),
        ("q=".to_owned(), "q"),
        ("order=amount".to_owned(), "order"),
        ("cursor=garbage".to_owned(), "cursor"),
        (format!("order=created_at&cursor={other_order_cursor}"), "cursor"),
        ("limit=0".to_owned(), "limit"),
        ("limit=201".to_owned(), "limit"),
        ("limit=many".to_owned(), "limit"),
        ("limit=2&limit=3".to_owned(), "limit"),
    ] {
        let (status, body) = list(&mesh, &query).await?;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "invalid_request", "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
    Ok(())
}
