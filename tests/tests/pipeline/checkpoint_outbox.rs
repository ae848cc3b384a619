//! A checkpoint is published once per transition, for good: the projector records
//! in the projection's own transaction which checkpoints are due and marks each one
//! published, so a replay after JetStream's de-duplication window has forgotten the
//! message ids publishes nothing again.

use std::time::Duration;

use async_nats::jetstream;
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::{Mesh, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// Messages of PAYTRACK_STATUS under `filter`.
async fn count(mesh: &Mesh, filter: String) -> Option<u64> {
    use futures::TryStreamExt;
    let stream = mesh.js.get_stream("PAYTRACK_STATUS").await.ok()?;
    let mut subjects = stream.info_with_subjects(filter).await.ok()?;
    let mut total = 0;
    while let Some((_, n)) = subjects.try_next().await.ok()? {
        total += n as u64;
    }
    Some(total)
}

/// Projects three transitions, waits (observably) until the stream's
/// de-duplication window has passed, then deletes the projector's durable consumer
/// and restarts the projector, which replays the whole stream: still exactly one
/// checkpoint per transition. (Before: the replay published all three again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_the_duplicate_window_publishes_no_second_checkpoint() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        duplicate_window_secs: 1,
        ..MeshOptions::default()
    })
    .await?;
    let tenant = mesh.tenant.clone();
    mesh.post_webhook("msg_o1", &Mesh::webhook_body("pay_o1", "pending", "m1"))
        .await?;
    mesh.post_webhook("msg_o2", &Mesh::webhook_body("pay_o2", "pending", "m1"))
        .await?;
    mesh.post_webhook("msg_o3", &Mesh::webhook_body("pay_o1", "succeeded", "m1"))
        .await?;
    let checkpoints = || count(&mesh, format!("paytrack.checkpoint.{tenant}.>"));
    // Two per transition: `persisted` and `ledger_posted`.
    eventually(WAIT, "six checkpoints", || async {
        checkpoints().await.filter(|n| *n == 6)
    })
    .await?;
    assert_eq!(count(&mesh, format!("paytrack.status.{tenant}.>")).await, Some(3));

    // Observe the window passing: a probe id published to the same stream after the
    // checkpoints is accepted again only once every older id is forgotten too.
    let probe_subject = format!("paytrack.checkpoint.probe{}.m.p", &tenant.as_str()[1..]);
    let probe = || async {
        let message = jetstream::message::PublishMessage::build()
            .message_id("window-probe")
            .payload("probe".into());
        mesh.js
            .send_publish(probe_subject.clone(), message)
            .await
            .ok()?
            .await
            .ok()
    };
    probe().await.filter(|ack| !ack.duplicate).expect("first probe stored");
    eventually(WAIT, "the duplicate window to pass", || async {
        probe().await.filter(|ack| !ack.duplicate)
    })
    .await?;

    // Replay everything into the projector from the start.
    mesh.restart_projector(async {
        let stream = mesh.js.get_stream("PAYTRACK_STATUS").await?;
        stream.delete_consumer("ledger-projector-status").await?;
        Ok(())
    })
    .await?;
    eventually(WAIT, "the replay to finish", || async {
        let stream = mesh.js.get_stream("PAYTRACK_STATUS").await.ok()?;
        let info = stream.consumer_info("ledger-projector-status").await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence > 0).then_some(())
    })
    .await?;
    assert_eq!(
        checkpoints().await,
        Some(6),
        "a replay must not publish checkpoints again"
    );
    Ok(())
}

/// A checkpoint whose row stayed unpublished (the projector crashed after its
/// commit) is published by the drainer, once, and marked with its sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drainer_publishes_checkpoints_left_unpublished() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let tenant = mesh.tenant.clone();
    mesh.post_webhook("msg_d1", &Mesh::webhook_body("pay_d1", "pending", "m1"))
        .await?;
    mesh.wait_for_row("pay_d1", 1).await?;
    let checkpoints = || count(&mesh, format!("paytrack.checkpoint.{tenant}.>"));
    eventually(WAIT, "the first checkpoints", || async {
        checkpoints().await.filter(|n| *n == 2)
    })
    .await?;

    // What a crash between commit and publish leaves behind: a due, unpublished row.
    sqlx::query(
        "INSERT INTO checkpoints (tenant, payment_id, version, merchant_id, status, trace_id, created_at,
                                  ledger_posted_due, is_final)
         VALUES ($1, 'pay_d1', 2, 'm1', 'succeeded', $2, now() - interval '1 minute', FALSE, FALSE)",
    )
    .bind(tenant.as_str())
    .bind("0".repeat(32))
    .execute(&mesh.db)
    .await?;

    let seq = eventually(WAIT, "the drained row marked", || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT persisted_seq FROM checkpoints WHERE tenant = $1 AND payment_id = 'pay_d1' AND version = 2
               AND published_at IS NOT NULL",
        )
        .bind(tenant.as_str())
        .fetch_optional(&mesh.db)
        .await
        .ok()
        .flatten()
        .flatten()
    })
    .await?;
    assert_eq!(checkpoints().await, Some(3));
    let stream = mesh.js.get_stream("PAYTRACK_STATUS").await?;
    let drained = stream.get_raw_message(u64::try_from(seq)?).await?;
    assert_eq!(
        drained.subject.as_str(),
        format!("paytrack.checkpoint.{tenant}.m1.pay_d1")
    );
    Ok(())
}
