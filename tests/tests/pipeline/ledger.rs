//! The ledger projector (issue 17): a double-entry ledger the database keeps
//! balanced, exactly-once batches that survive a kill, two instances keeping
//! per-payment order, a rebuild equal to the live projection, `final` only after both
//! checkpoints, and a list `position` a subscription can continue from.
//!
//! Transitions are published directly as the reconciler (its NATS user), so volume
//! costs no webhook round trips.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream;
use paytrack_nats::Role;
use paytrack_tests::Mesh;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::workload::{
    Rebuilt, WAIT, check_ledger, plans, publish, rebuild_and_dump, wait_projected, wait_some_projected,
};
use paytrack_tests::ws::WsClient;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The tables a flow of transitions alone fills.
const LEDGER_TABLES: [&str; 6] = [
    "payments",
    "payment_timeline",
    "ledger_accounts",
    "journal_entries",
    "ledger_postings",
    "checkpoints",
];

/// Two projector instances share the consumer; one is killed in the middle of about
/// 10,000 transitions and started again. The projection then holds every
/// transition once, each payment's ledger is what its ordered history implies, the
/// ledger balances, both instances did part of the work, and a rebuild from the
/// streams into an empty database equals it row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_flow_two_instances_end_equal_to_a_rebuild() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let (second, second_task) = mesh.spawn_projector("second");
    let plans = plans("pk", 2_900);
    let total: usize = plans.iter().map(|p| p.statuses.len()).sum();
    assert!(total >= 10_000, "the issue's size: {total} transitions");
    let publisher = publish(&mesh, &plans, Duration::ZERO);
    let killer = async {
        // Kill once part of the work is committed (and while the rest is in flight).
        wait_some_projected(&mesh, 300).await?;
        mesh.kill_projector(async { Ok(()) }).await
    };
    let started = std::time::Instant::now();
    let (published, killed) = tokio::join!(publisher, killer);
    assert_eq!(published?, total);
    killed?;
    wait_projected(&mesh, &mesh.db, total).await?;
    eprintln!(
        "live: {total} transitions projected (with a kill) in {:?}",
        started.elapsed()
    );
    check_ledger(&mesh.db, &mesh.tenant, &plans).await?;
    let instances: Vec<(String, i64)> =
        sqlx::query_as("SELECT instance, applied FROM projector_progress WHERE applied > 0 ORDER BY instance")
            .fetch_all(&mesh.db)
            .await?;
    assert!(instances.len() >= 2, "both instances applied batches: {instances:?}");
    let applied: i64 = instances.iter().map(|i| i.1).sum();
    assert_eq!(
        applied, total as i64,
        "every transition applied exactly once across instances"
    );
    second.cancel();
    second_task.await??;

    let Rebuilt {
        report,
        live,
        replayed,
        db: rebuilt,
    } = rebuild_and_dump(&mesh).await?;
    assert_eq!(report.transitions, total as u64);
    eprintln!("rebuild: {report:?}");
    for (table, rows) in &live {
        if LEDGER_TABLES.contains(table) {
            assert!(!rows.is_empty(), "{table} has rows");
        }
        assert_eq!(rows.len(), replayed[table].len(), "{table}: row count");
        for (a, b) in rows.iter().zip(&replayed[table]) {
            assert_eq!(a, b, "{table}: live and rebuilt rows differ");
        }
    }
    check_ledger(&rebuilt, &mesh.tenant, &plans).await?;
    Ok(())
}

/// The database itself refuses a journal entry whose legs do not sum to zero per
/// currency, and any edit of a posted leg; a balanced entry written by hand commits.
#[tokio::test]
async fn the_database_refuses_an_unbalanced_journal_entry() -> anyhow::Result<()> {
    let db = PgPool::connect(&paytrack_tests::pg::fresh_database().await?).await?;
    paytrack_shared::db::MIGRATOR.run(&db).await?;
    sqlx::query(
        "INSERT INTO ledger_accounts (tenant, account, currency, kind) VALUES
           ('t1', 'provider_clearing:x', 'USD', 'asset'), ('t1', 'merchant_payable:m', 'USD', 'liability'),
           ('t1', 'provider_clearing:x', 'EUR', 'asset'), ('t1', 'merchant_payable:m', 'EUR', 'liability')",
    )
    .execute(&db)
    .await?;
    let entry = |version: i64, legs: Vec<(&'static str, &'static str, i64)>| {
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            sqlx::query(
                "INSERT INTO journal_entries (tenant, payment_id, version, entry_kind, status, status_seq, trace_id, occurred_at)
                 VALUES ('t1', 'p1', $1, 'capture', 'succeeded', 1, 'x', now())",
            )
            .bind(version)
            .execute(&mut *tx)
            .await?;
            // One statement per leg: the check waits for the commit.
            for (leg, (account, currency, amount)) in legs.into_iter().enumerate() {
                sqlx::query(
                    "INSERT INTO ledger_postings (tenant, payment_id, version, leg, account, currency, amount_minor)
                     VALUES ('t1', 'p1', $1, $2, $3, $4, $5)",
                )
                .bind(version)
                .bind(leg as i32)
                .bind(account)
                .bind(currency)
                .bind(amount)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
    };
    let refused = |r: Result<(), sqlx::Error>| {
        r.err()
            .and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())))
    };
    let unbalanced = [
        (1, vec![("provider_clearing:x", "USD", 100)], "a one-legged entry"),
        (
            2,
            vec![("provider_clearing:x", "USD", 100), ("merchant_payable:m", "USD", -90)],
            "legs that do not sum to zero",
        ),
        (
            3,
            vec![("provider_clearing:x", "USD", 100), ("merchant_payable:m", "EUR", -100)],
            "legs that sum to zero only across currencies",
        ),
    ];
    for (version, legs, why) in unbalanced {
        assert_eq!(refused(entry(version, legs).await), Some("23514".into()), "{why}");
    }
    entry(
        4,
        vec![("provider_clearing:x", "USD", 100), ("merchant_payable:m", "USD", -100)],
    )
    .await?;
    let edit = sqlx::query("UPDATE ledger_postings SET amount_minor = 1 WHERE version = 4 AND leg = 0")
        .execute(&db)
        .await;
    assert!(edit.is_err(), "a posted leg cannot be edited");
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM journal_entries")
        .fetch_one(&db)
        .await?;
    assert_eq!(entries, 1, "only the balanced entry was committed");
    Ok(())
}

/// `final` appears (REST, list, WebSocket) only once both checkpoints of the version
/// are in the stream, for a status terminal on its rail; `succeeded` on ach_debit is
/// never final (its return window), while a card capture and a failure are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_only_after_both_checkpoints_and_never_for_ach_success() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let mut ws = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    ws.send(json!({"type": "subscribe", "channel": "payments"})).await?;
    ws.next_of("subscribed", WAIT).await?;
    let all = plans("pf", 4);
    // card succeeded, ach_debit succeeded (then held back from its return), rtp failed.
    let mut ach = all[1].clone();
    ach.statuses.truncate(3);
    let chosen = vec![all[0].clone(), ach, all[2].clone()];
    publish(&mesh, &chosen, Duration::ZERO).await?;
    wait_projected(&mesh, &mesh.db, 9).await?;

    // The WebSocket: the only final events are the ledger_posted checkpoints of the
    // card capture and the rtp failure, each after its persisted checkpoint.
    let mut seen: Vec<Value> = Vec::new();
    let mut finals = BTreeSet::new();
    while finals.len() < 2 {
        let event = ws
            .next_of("event", WAIT)
            .await
            .map_err(|e| e.context(format!("final events so far {finals:?}, seen {seen:?}")))?;
        if event["final"] == true {
            finals.insert(event["payment_id"].as_str().unwrap_or_default().to_owned());
            assert_eq!(event["kind"], "checkpoint", "{event}");
            assert_eq!(event["checkpoint"], "ledger_posted", "{event}");
            let persisted = seen.iter().any(|e| {
                e["payment_id"] == event["payment_id"]
                    && e["version"] == event["version"]
                    && e["checkpoint"] == "persisted"
            });
            assert!(persisted, "final only after the persisted checkpoint: {event}");
        }
        seen.push(event);
    }
    assert_eq!(finals, BTreeSet::from(["pf0".to_owned(), "pf2".to_owned()]));
    let ach_checkpoint = seen
        .iter()
        .find(|e| e["payment_id"] == "pf1" && e["version"] == 3 && e["checkpoint"] == "ledger_posted");
    if let Some(e) = ach_checkpoint {
        assert_eq!(e["final"], false, "ach_debit succeeded is not final: {e}");
    }

    // REST and the list agree; and where final, both checkpoints are in the stream.
    let token = mesh.operator_token();
    for (payment, expected) in [("pf0", true), ("pf1", false), ("pf2", true)] {
        let body = mesh.payment_view(payment).await?;
        assert_eq!(body["final"], expected, "{payment}: {body}");
        let evidence: Value = mesh
            .get(&format!("/v1/payments/{payment}/evidence"), &token)
            .await?
            .json()
            .await?;
        let version = body["version"].clone();
        let checkpoints: Vec<&Value> = evidence["checkpoints"]
            .as_array()
            .map(|a| a.iter().filter(|c| c["version"] == version).collect())
            .unwrap_or_default();
        assert_eq!(checkpoints.len(), 2, "{payment}: {evidence}");
        let stream = mesh.js.get_stream("PAYTRACK_STATUS").await?;
        for c in checkpoints {
            assert_eq!(c["observed"], true);
            let seq = c["seq"].as_u64().expect("published");
            let message = stream.get_raw_message(seq).await?;
            assert!(message.subject.starts_with("paytrack.checkpoint."));
        }
    }
    let ledger: Value = mesh.get("/v1/payments/pf0/ledger", &token).await?.json().await?;
    assert_eq!(ledger["ledger_minor"], 100, "{ledger}");
    assert_eq!(ledger["entries"][0]["entry_kind"], "capture");
    let list: Value = mesh
        .get("/v1/payments?status=succeeded&order=created_at", &token)
        .await?
        .json()
        .await?;
    let mut listed: Vec<(&str, bool)> = list["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| (i["payment_id"].as_str().unwrap_or(""), i["final"] == true))
                .collect()
        })
        .unwrap_or_default();
    // Both were projected in one batch: their creation order is not what is checked.
    listed.sort();
    assert_eq!(listed, vec![("pf0", true), ("pf1", false)], "{list}");
    Ok(())
}

/// A fee the provider reports on its capture webhook is posted with the capture: the
/// provider owes the amount less its fee, the fee is an expense, and the entry sums
/// to zero. A fee that cannot be (negative, or above the amount) is refused 400 and
/// nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_provider_fee_is_posted_as_an_expense_of_the_capture() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let token = mesh.operator_token();
    let with_fee = |payment: &str, fee: i64| -> anyhow::Result<String> {
        let mut body: Value = serde_json::from_str(&Mesh::webhook_body(payment, "succeeded", "m_fee"))?;
        body["data"]["fee_minor"] = json!(fee);
        Ok(body.to_string())
    };
    for (i, fee) in [-1, 1251].into_iter().enumerate() {
        let response = mesh
            .post_webhook(&format!("msg_badfee_{i}"), &with_fee("pay_badfee", fee)?)
            .await?;
        assert_eq!(response.status(), 400, "fee {fee}");
        assert_eq!(response.json::<Value>().await?["code"], "invalid_request");
    }
    assert_eq!(mesh.stream_messages(paytrack_shared::subjects::STREAM_IN).await?, 0);

    let response = mesh.post_webhook("msg_fee_1", &with_fee("pay_fee", 37)?).await?;
    assert_eq!(response.status(), 200);
    let ledger: Value = mesh
        .eventually(WAIT, "the capture posted", || async {
            let ledger: Value = mesh
                .get("/v1/payments/pay_fee/ledger", &token)
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (ledger["entries"].as_array().is_some_and(|e| !e.is_empty())).then_some(ledger)
        })
        .await?;
    let entry = &ledger["entries"][0];
    assert_eq!(entry["entry_kind"], "capture", "{ledger}");
    let legs: BTreeMap<String, i64> = entry["postings"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|l| {
                    (
                        l["account"].as_str().unwrap_or_default().to_owned(),
                        l["amount_minor"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        legs,
        BTreeMap::from([
            ("provider_clearing:stdwebhooks".to_owned(), 1213),
            ("provider_fees:stdwebhooks".to_owned(), 37),
            ("merchant_payable:m_fee".to_owned(), -1250),
        ]),
        "{ledger}"
    );
    assert_eq!(ledger["ledger_minor"], 1250, "{ledger}");
    let kind: String = sqlx::query_scalar(
        "SELECT kind FROM ledger_accounts WHERE tenant = $1 AND account = 'provider_fees:stdwebhooks'",
    )
    .bind(mesh.tenant.as_str())
    .fetch_one(&mesh.db)
    .await?;
    assert_eq!(kind, "expense");
    Ok(())
}

/// A success on ach_debit turns final only once the last of its return windows has
/// closed with the payment still at that version: the projector publishes a
/// `return_window_closed` checkpoint saying final, and REST, the WebSocket and a
/// rebuild agree. A success inside its window, and one whose window closed but that
/// moved on to an investigation, never get one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ach_success_turns_final_only_when_its_return_window_closes() -> anyhow::Result<()> {
    use paytrack_shared::Status::*;
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    let token = mesh.operator_token();
    let plan = |payment: &str, statuses: Vec<paytrack_shared::Status>| paytrack_tests::workload::Plan {
        payment: payment.to_owned(),
        merchant: "m1".to_owned(),
        rail: "ach_debit",
        amount: 500,
        statuses,
        ledger_minor: 500,
        entries: vec!["capture"],
    };
    let history = |plan: &paytrack_tests::workload::Plan, days_ago: i64| -> anyhow::Result<Vec<_>> {
        (1..=plan.statuses.len())
            .map(|v| {
                let mut t = paytrack_tests::workload::transition(&mesh.tenant, plan, v)?;
                t.occurred_at -= chrono::Duration::days(days_ago);
                Ok(t)
            })
            .collect()
    };
    // Inside the window (1 day old), and moved on after a success long ago: both are
    // fully stored before the payment whose window closed is even published, so the
    // scan that turns that one final has seen them.
    let inside = plan("win_inside", vec![Initiated, Pending, Succeeded]);
    let moved = plan("win_moved", vec![Pending, Succeeded, InvestigationRequired]);
    let closed = plan("win_closed", vec![Initiated, Pending, Succeeded]);
    paytrack_tests::workload::publish_transitions(&mesh, &history(&inside, 1)?).await?;
    paytrack_tests::workload::publish_transitions(&mesh, &history(&moved, 61)?).await?;
    wait_projected(&mesh, &mesh.db, 6).await?;
    paytrack_tests::workload::publish_transitions(&mesh, &history(&closed, 61)?).await?;

    let body = mesh
        .eventually(WAIT, "the closed window's success final over REST", || async {
            let body: Value = mesh
                .get("/v1/payments/win_closed", &token)
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (body["final"] == true).then_some(body)
        })
        .await?;
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["version"], 3, "{body}");

    // The stream says so, once, after persisted and ledger_posted.
    let stream = mesh.js.get_stream("PAYTRACK_STATUS").await?;
    let checkpoints = |payment: &'static str| {
        let stream = stream.clone();
        let tenant = mesh.tenant.clone();
        async move {
            let last = stream
                .get_last_raw_message_by_subject(&format!("paytrack.checkpoint.{tenant}.m1.{payment}"))
                .await?;
            let value: Value = serde_json::from_slice(&last.payload)?;
            anyhow::Ok(value)
        }
    };
    let last = checkpoints("win_closed").await?;
    assert_eq!(last["checkpoint"], "return_window_closed", "{last}");
    assert_eq!(last["final"], true, "{last}");
    assert_eq!(last["version"], 3, "{last}");
    for payment in ["win_inside", "win_moved"] {
        let last = checkpoints(payment).await?;
        assert_ne!(last["checkpoint"], "return_window_closed", "{payment}: {last}");
        let body = mesh.payment_view(payment).await?;
        assert_eq!(body["final"], false, "{payment}: {body}");
    }

    // The WebSocket replays the payment's history: final arrives with the window's
    // checkpoint, never before.
    let mut ws = WsClient::connect(&mesh.ws_url(), &token).await?;
    let epoch = paytrack_nats::epoch_of(stream.cached_info());
    ws.send(json!({"type": "subscribe", "channel": "payment:win_closed", "since": {"epoch": epoch, "seq": 1}}))
        .await?;
    ws.next_of("subscribed", WAIT).await?;
    let mut seen = Vec::new();
    loop {
        let event = ws.next_of("event", WAIT).await?;
        let kind = event["checkpoint"].as_str().unwrap_or("transition").to_owned();
        if event["final"] == true {
            assert_eq!(kind, "return_window_closed", "{event}");
            assert_eq!(event["version"], 3, "{event}");
            break;
        }
        seen.push((event["version"].as_u64().unwrap_or(0), kind));
    }
    for kind in ["transition", "persisted", "ledger_posted"] {
        assert!(
            seen.contains(&(3, kind.to_owned())),
            "{kind} of v3 before final: {seen:?}"
        );
    }

    // A rebuild reads the window's checkpoint back and ends with the same rows.
    let Rebuilt { live, replayed, .. } = rebuild_and_dump(&mesh).await?;
    assert_eq!(live["checkpoints"], replayed["checkpoints"]);
    assert_eq!(live["payments"], replayed["payments"]);
    let finals: Vec<&Value> = live["payments"].iter().filter(|p| p["final"] == true).collect();
    assert_eq!(finals.len(), 1, "only win_closed is final: {finals:?}");
    Ok(())
}

/// While transitions flow (to two projector instances), a client loads the list
/// with its `position`, then subscribes to `payments` with `since` = position: for
/// every payment, the listed version plus the transitions received cover every
/// version, so nothing fell between the page and the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_position_then_since_misses_no_transition() -> anyhow::Result<()> {
    // The client reads its events once the flow is over: room for all of them.
    let mesh = Mesh::start_with(MeshOptions {
        session_queue: 16_384,
        session_queue_bytes: 32 << 20,
        ..MeshOptions::quiet()
    })
    .await?;
    let (second, second_task) = mesh.spawn_projector("second");
    let plans = plans("pl", 240);
    let token = mesh.operator_token();
    // A steady flow: ten payments' whole histories at a time, without pause, so the
    // list is loaded while transitions are in flight to the projectors.
    let publisher = async {
        let mut published = 0;
        for group in plans.chunks(10) {
            published += publish(&mesh, group, Duration::ZERO).await?;
        }
        Ok::<_, anyhow::Error>(published)
    };
    let client = async {
        // Load the list while the flow is under way.
        wait_some_projected(&mesh, 100).await?;
        // The safe position is copied from the consumer's ack floor every 200 ms: on a
        // loaded machine the first copy may not have happened yet (position 0 is safe,
        // but proves nothing), so load the list until it names a point in the flow.
        let list: Value = mesh
            .eventually(WAIT, "a list with a position inside the flow", || async {
                let list: Value = mesh
                    .get("/v1/payments?limit=200", &token)
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (list["position"]["seq"].as_u64().unwrap_or(0) > 0).then_some(list)
            })
            .await?;
        let position = list["position"].clone();
        // The rest of the list, page by page (at most 200 a page); the first page's
        // position is the earliest, so it covers every later page too.
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        let mut cursor = list["next_cursor"].as_str().map(str::to_owned);
        while let Some(next) = cursor.take() {
            let page: Value = mesh
                .get(&format!("/v1/payments?limit=200&cursor={next}"), &token)
                .await?
                .json()
                .await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        let mut ws = WsClient::connect(&mesh.ws_url(), &token).await?;
        ws.send(json!({"type": "subscribe", "channel": "payments", "since": position}))
            .await?;
        let subscribed = ws.next_of("subscribed", WAIT).await?;
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        let listed: BTreeMap<String, u64> = items
            .iter()
            .map(|i| {
                (
                    i["payment_id"].as_str().unwrap_or("").to_owned(),
                    i["version"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        Ok::<_, anyhow::Error>((ws, listed))
    };
    let (published, client) = tokio::join!(publisher, client);
    published?;
    let (mut ws, listed) = client?;
    let mut received: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let complete = |received: &BTreeMap<String, BTreeSet<u64>>| {
        plans.iter().all(|p| {
            let last = p.statuses.len() as u64;
            let from = listed.get(&p.payment).copied().unwrap_or(0);
            (from + 1..=last).all(|v| received.get(&p.payment).is_some_and(|r| r.contains(&v)))
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !complete(&received) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = ws.next_of("event", remaining).await.map_err(|e| {
            let missing: Vec<_> = plans
                .iter()
                .filter(|p| {
                    let from = listed.get(&p.payment).copied().unwrap_or(0);
                    (from + 1..=p.statuses.len() as u64)
                        .any(|v| !received.get(&p.payment).is_some_and(|r| r.contains(&v)))
                })
                .map(|p| p.payment.clone())
                .collect();
            e.context(format!("versions missed after the list's position: {missing:?}"))
        })?;
        if event["kind"] == "transition" {
            received
                .entry(event["payment_id"].as_str().unwrap_or("").to_owned())
                .or_default()
                .insert(event["version"].as_u64().unwrap_or(0));
        }
    }
    second.cancel();
    second_task.await??;
    Ok(())
}

/// Two projector replicas whose return-window scans read the same closed windows
/// before either publishes (the race two instances run every few seconds): each
/// version still gets one `return_window_closed` checkpoint in the stream (the
/// second publish is a duplicate by its message id), and its row keeps that
/// checkpoint's sequence and reads final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_closing_the_same_windows_store_one_checkpoint_each() -> anyhow::Result<()> {
    use anyhow::Context;
    use futures::StreamExt;
    use paytrack_ledger_projector::window;
    use paytrack_shared::Status::*;
    let mesh = Mesh::start_with(MeshOptions::quiet()).await?;
    // Successes whose last return window closes half a minute from now: projected
    // (persisted, posted) with the window still open, so no scan closes them early.
    let closes_at = chrono::Utc::now() + chrono::Duration::seconds(30);
    let mut occurred_at = closes_at - chrono::Duration::days(60);
    for _ in 0..8 {
        let closes = paytrack_shared::StatusModel::get()
            .final_after(Succeeded, Some("ach_debit"), occurred_at)
            .context("ach_debit success has a return window")?;
        occurred_at += closes_at - closes;
    }
    let payments = 20;
    let mut transitions = Vec::new();
    for n in 0..payments {
        let plan = paytrack_tests::workload::Plan {
            payment: format!("twin_{n}"),
            merchant: "m1".to_owned(),
            rail: "ach_debit",
            amount: 700,
            statuses: vec![Initiated, Pending, Succeeded],
            ledger_minor: 700,
            entries: vec!["capture"],
        };
        for v in 1..=3 {
            let mut t = paytrack_tests::workload::transition(&mesh.tenant, &plan, v)?;
            t.occurred_at = occurred_at;
            transitions.push(t);
        }
    }
    paytrack_tests::workload::publish_transitions(&mesh, &transitions).await?;
    wait_projected(&mesh, &mesh.db, 3 * payments).await?;
    anyhow::ensure!(
        chrono::Utc::now() < closes_at,
        "projecting took past the windows' close: the setup cannot stage the race"
    );

    mesh.restart_projector(async {
        let wait = (closes_at - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(200)).await;
        let first = window::closed_now(&mesh.db).await?;
        let second = window::closed_now(&mesh.db).await?;
        assert_eq!((first.len(), second.len()), (payments, payments));
        let js_first = jetstream::new(mesh.nats.connect_as(Role::Projector).await?);
        let js_second = jetstream::new(mesh.nats.connect_as(Role::Projector).await?);
        let (a, b) = tokio::join!(
            window::publish(&mesh.db, &js_first, first),
            window::publish(&mesh.db, &js_second, second)
        );
        assert_eq!((a, b), (payments, payments), "both replicas' publishes acknowledged");
        Ok(())
    })
    .await?;

    // The stream holds one return_window_closed checkpoint per payment.
    let stream = mesh.js.get_stream("PAYTRACK_STATUS").await?;
    let mut ordered = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("paytrack.checkpoint.{}.>", mesh.tenant),
            ..Default::default()
        })
        .await?;
    let pending = ordered.info().await?.num_pending;
    let mut messages = ordered.messages().await?;
    let mut closed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..pending {
        let message = messages.next().await.context("checkpoint")??;
        let value: Value = serde_json::from_slice(&message.payload)?;
        if value["checkpoint"] == "return_window_closed" {
            let seq = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
            closed
                .entry(value["payment_id"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(seq);
        }
    }
    assert_eq!(closed.len(), payments, "{closed:?}");
    for (payment, seqs) in &closed {
        assert_eq!(seqs.len(), 1, "{payment}: {seqs:?}");
        let (seq, is_final): (Option<i64>, bool) = sqlx::query_as(
            "SELECT window_closed_seq, is_final FROM checkpoints WHERE tenant = $1 AND payment_id = $2 AND version = 3",
        )
        .bind(mesh.tenant.as_str())
        .bind(payment)
        .fetch_one(&mesh.db)
        .await?;
        assert_eq!((seq, is_final), (i64::try_from(seqs[0]).ok(), true), "{payment}");
    }
    Ok(())
}

/// Waits until every durable consumer of the projector has handled everything its
/// stream holds, and every checkpoint owed is published.
async fn projector_caught_up(mesh: &Mesh) -> anyhow::Result<()> {
    let consumers = [
        ("PAYTRACK_STATUS", "ledger-projector-status"),
        ("PAYTRACK_IN", "ledger-projector-evidence"),
        ("PAYTRACK_SESSION", "ledger-projector-sessions"),
        ("PAYTRACK_OUTCOME", "ledger-projector-outcomes"),
        ("PAYTRACK_ALERT", "ledger-projector-alerts"),
    ];
    mesh.eventually(WAIT, "the projector caught up with every stream", || async {
        for (stream, name) in consumers {
            let stream = mesh.js.get_stream(stream).await.ok()?;
            let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(name).await.ok()?;
            let info = consumer.info().await.ok()?;
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return None;
            }
        }
        let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM checkpoints WHERE published_at IS NULL")
            .fetch_one(&mesh.db)
            .await
            .ok()?;
        (unpublished == 0).then_some(())
    })
    .await
}

/// A rebuild restores every table of the projection, row for row: webhooks'
/// evidence and outcomes, a session's audit, the ledger, a payment alert, the
/// `dead_letter` alerts of a parked message, and operators' acknowledgements of
/// them (facts in PAYTRACK_ALERT, not rows only PostgreSQL held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_restores_every_table_alerts_and_acknowledgements_included() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        consumer_max_deliveries: Some(3),
        consumer_retry_ms: Some(100),
        ..MeshOptions::default()
    })
    .await?;
    let tenant = mesh.tenant.clone();
    for pay in ["pay_rb_1", "pay_rb_2"] {
        for status in ["pending", "succeeded"] {
            let response = mesh
                .post_webhook(&format!("msg_{pay}_{status}"), &Mesh::webhook_body(pay, status, "m1"))
                .await?;
            assert!(response.status().is_success(), "{}", response.status());
        }
        mesh.wait_for_row(pay, 2).await?;
    }
    // A payment created through the API: its routing decision is projected too.
    let created = reqwest::Client::new()
        .post(format!("{}/v1/payments", mesh.ingest_url))
        .bearer_auth(&mesh.api_key)
        .header("Idempotency-Key", "rebuild-create-1")
        .json(&json!({
            "merchant_id": "m1", "amount_minor": 4200, "currency": "USD", "rail": "card",
            "country": "US", "customer_ref": "cust_rb",
        }))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await?;
    mesh.wait_for_row(created["payment_id"].as_str().unwrap_or_default(), 1)
        .await?;
    let mut client = WsClient::connect(&mesh.ws_url(), &mesh.operator_token()).await?;
    client
        .send(json!({"type": "subscribe", "channel": "payment:pay_rb_1"}))
        .await?;
    client.next_of("subscribed", WAIT).await?;
    drop(client);

    let alert = paytrack_shared::envelope::Alert {
        v: 1,
        alert_id: format!("{tenant}:pay_rb_1:unclear_pending:1"),
        kind: "unclear_pending".into(),
        tenant: tenant.clone(),
        payment_id: paytrack_shared::PaymentId::new("pay_rb_1")?,
        merchant_id: None,
        detail: "no answer from the provider".into(),
        evidence: "/v1/payments/pay_rb_1/evidence".into(),
        raised_at: chrono::Utc::now(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
    };
    mesh.js
        .send_publish(
            format!("paytrack.alert.{tenant}.unclear_pending"),
            jetstream::message::PublishMessage::build()
                .message_id(alert.alert_id.clone())
                .payload(paytrack_shared::envelope::encode(&alert)),
        )
        .await?
        .await?;
    mesh.js
        .publish(format!("paytrack.in.{tenant}.pay_rb_poison"), "not an envelope".into())
        .await?
        .await?;

    let token = mesh.operator_token();
    let listed = mesh
        .eventually(WAIT, "the payment alert and two dead letters listed", || async {
            let list: Value = mesh.get("/v1/alerts", &token).await.ok()?.json().await.ok()?;
            let items = list["items"].as_array()?.clone();
            (items.len() >= 3).then_some(items)
        })
        .await?;
    let http = reqwest::Client::new();
    for item in &listed {
        let id = item["alert_id"].as_str().unwrap_or_default();
        let response = http
            .post(format!("{}/v1/alerts/{id}/ack", mesh.ingest_url))
            .bearer_auth(&token)
            .json(&json!({"note": format!("looked at {id}")}))
            .send()
            .await?;
        assert_eq!(response.status(), 200, "ack {id}");
        let acked: Value = response.json().await?;
        assert_eq!(acked["ack_note"], format!("looked at {id}"), "read-your-write: {acked}");
    }
    projector_caught_up(&mesh).await?;

    let Rebuilt {
        report, live, replayed, ..
    } = rebuild_and_dump(&mesh).await?;
    eprintln!("rebuild: {report:?}");
    for table in [
        "payments",
        "payment_timeline",
        "inbound_facts",
        "fact_outcomes",
        "session_audit",
        "checkpoints",
        "payment_decisions",
        "alerts",
        "alert_acks",
    ] {
        assert!(!live[table].is_empty(), "{table} has rows");
    }
    assert!(live["alerts"].len() >= 3 && live["alert_acks"].len() >= 3);
    for (table, rows) in &live {
        assert_eq!(rows, &replayed[table], "{table}: live and rebuilt rows differ");
    }
    assert_eq!(live.len(), replayed.len());
    Ok(())
}
