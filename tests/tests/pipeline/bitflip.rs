//! A damaged message block of PAYTRACK_STATUS or PAYTRACK_IN: what the product does
//! when the broker loses acknowledged messages (docs/durability-bitflip.md).
//!
//! One nats-server with file storage, as the harness runs it. The server is stopped, one
//! byte of the block record holding a projected transition is flipped (or the block is
//! truncated at that record), and the server started again. nats-server checks each
//! record's hash when it rebuilds the block and drops the bad record and everything
//! after it in the block: the stream's tail is gone, and its sequence numbers are given
//! out again. The projection in PostgreSQL still holds the lost transitions. When the
//! payment moves on, the reconciler (which sees only the shortened chain) writes the
//! lost version again with different content; the projector must not take that for a
//! redelivery and drop it: it raises a `history_diverged` alert, so the divergence is
//! never silent, and takes the stream's new chain as the payment's next versions, so
//! the projection converges on what the reconciler continues from.

use std::path::{Path, PathBuf};

use async_nats::jetstream;
use paytrack_shared::ids::{MerchantId, PaymentId};
use paytrack_shared::subjects;
use paytrack_tests::{Mesh, eventually, facts};

/// Generous bound for the mesh to react on a loaded machine.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How the stored block is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One bit of the record's payload is flipped (its hash no longer matches).
    FlipByte,
    /// The block file ends where the record starts (a torn write, a short disk).
    Truncate,
}

/// The message block files of `stream` under the server's store.
fn block_files(store: &Path, stream: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![store.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "blk")
                && path.parent().and_then(Path::parent).and_then(Path::file_name) == Some(stream.as_ref())
            {
                found.push(path);
            }
        }
    }
    found
}

/// Where the record of stream sequence `seq` starts in a block file, and its length.
/// A record is: length (u32, little-endian, the top bit flags headers, the length
/// covers the whole record including its 8-byte hash), sequence (u64), timestamp
/// (i64), subject length (u16), subject, headers, payload, hash.
fn find_record(block: &[u8], seq: u64) -> Option<(usize, usize)> {
    let mut at = 0;
    while at + 12 <= block.len() {
        let length = u32::from_le_bytes(block[at..at + 4].try_into().ok()?) & 0x7fff_ffff;
        let record_seq = u64::from_le_bytes(block[at + 4..at + 12].try_into().ok()?) & !(1 << 63);
        let length = usize::try_from(length).ok()?;
        if length < 30 || at + length > block.len() {
            return None;
        }
        if record_seq == seq {
            return Some((at, length));
        }
        at += length;
    }
    None
}

/// Damages the record of `seq` in `stream`'s blocks while the server is stopped.
fn damage_record(store: &Path, stream: &str, seq: u64, damage: Damage) -> anyhow::Result<()> {
    for file in block_files(store, stream) {
        let mut bytes = std::fs::read(&file)?;
        let Some((start, length)) = find_record(&bytes, seq) else {
            continue;
        };
        match damage {
            Damage::FlipByte => {
                // A payload byte: just before the record's 8-byte hash.
                bytes[start + length - 9] ^= 0x01;
                std::fs::write(&file, &bytes)?;
            }
            Damage::Truncate => {
                let file = std::fs::OpenOptions::new().write(true).open(&file)?;
                file.set_len(u64::try_from(start)?)?;
            }
        }
        return Ok(());
    }
    anyhow::bail!("no block of {stream} holds sequence {seq}")
}

async fn stream_last_seq(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(stream).await?.info().await?.state.last_sequence)
}

/// The alerts the projection holds for `payment`: (kind, detail).
async fn alerts(mesh: &Mesh, payment: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT kind, detail FROM alerts WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_all(&mesh.db)
            .await?,
    )
}

/// A payment projected as `succeeded` (version 2) loses that transition in the
/// broker; the provider then reports it `failed`. The projection keeps `succeeded`
/// and raises `history_diverged`, naming both versions.
async fn lost_transition_is_noticed(damage: Damage) -> anyhow::Result<()> {
    let mut mesh = Mesh::start().await?;
    let payment = format!("pay_damaged_{}", format!("{damage:?}").to_lowercase());
    let ok = |status: reqwest::StatusCode| -> anyhow::Result<()> {
        anyhow::ensure!(status == 200, "webhook answered {status}");
        Ok(())
    };
    ok(mesh
        .post_webhook("dmg_1", &Mesh::webhook_body(&payment, "pending", "m_1"))
        .await?
        .status())?;
    mesh.wait_for_row(&payment, 1).await?;
    ok(mesh
        .post_webhook("dmg_2", &Mesh::webhook_body(&payment, "succeeded", "m_1"))
        .await?
        .status())?;
    let (status, version, ..) = mesh.wait_for_row(&payment, 2).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 2));
    // Another payment's facts after it, so the damage is not just the last record.
    ok(mesh
        .post_webhook("dmg_3", &Mesh::webhook_body("pay_bystander", "pending", "m_1"))
        .await?
        .status())?;
    mesh.wait_for_row("pay_bystander", 1).await?;

    let subject = subjects::status(&mesh.tenant, &MerchantId::new("m_1")?, &PaymentId::new(&payment)?);
    let status_stream = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let lost_seq = status_stream.get_last_raw_message_by_subject(&subject).await?.sequence;
    let inputs_before = stream_last_seq(&mesh.js, subjects::STREAM_IN).await?;

    mesh.nats.stop();
    damage_record(&mesh.nats.store_dir(), subjects::STREAM_STATUS, lost_seq, damage)?;
    mesh.nats.restart().await?;

    // What the broker lost: the transition and everything after it in the block (the
    // projector's outbox may write checkpoints again meanwhile, so the stream's
    // length says little; the payment's chain says what is gone).
    let chain = facts::chain(&mesh.js, &mesh.tenant, &payment).await?;
    assert_eq!(chain.len(), 1, "only version 1 is left in the stream: {chain:?}");
    assert_eq!(stream_last_seq(&mesh.js, subjects::STREAM_IN).await?, inputs_before);
    // The projection still holds what was acknowledged and projected.
    let (status, version, ..) = mesh.wait_for_row(&payment, 2).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 2));

    // Noticed at once, before anything new happens: the projector's view of the
    // stream's position moved back, and every projected version the stream no longer
    // holds gets a `history_lost` alert (this payment's version 2 and the bystander's).
    for (lost, version) in [(payment.as_str(), "version 2"), ("pay_bystander", "version 1")] {
        let raised = eventually(WAIT, "a history_lost alert", || async {
            let found = alerts(&mesh, lost).await.ok()?;
            found.into_iter().find(|(kind, _)| kind == "history_lost")
        })
        .await?;
        assert!(raised.1.contains(version), "{lost}: {}", raised.1);
    }

    // The provider reports the payment again: the reconciler, on the shortened
    // chain, writes version 2 a second time, as `failed`.
    ok(mesh
        .post_webhook("dmg_4", &Mesh::webhook_body(&payment, "failed", "m_1"))
        .await?
        .status())?;
    let rewritten = eventually(WAIT, "the reconciler to write version 2 again", || async {
        let chain = facts::chain(&mesh.js, &mesh.tenant, &payment).await.ok()?;
        chain.into_iter().find(|t| t.version == 2)
    })
    .await?;
    assert_eq!(rewritten.status.as_str(), "failed");

    // Noticed: an alert, and the projection does not silently keep a history that the
    // stream no longer has, nor silently take the new one.
    let raised = eventually(WAIT, "a history_diverged alert", || async {
        let found = alerts(&mesh, &payment).await.ok()?;
        found.into_iter().find(|(kind, _)| kind == "history_diverged")
    })
    .await?;
    assert!(
        raised.1.contains("succeeded") && raised.1.contains("failed"),
        "the alert names both versions: {}",
        raised.1
    );
    // Converged: the stream's new chain is the payment's history from here on (the
    // reconciler continues it), so the projection takes it as its next version, after
    // what it had; nothing it recorded is removed, and the ledger moves by postings.
    let (status, version, ..) = mesh.wait_for_row(&payment, 3).await?;
    assert_eq!(
        (status.as_str(), version),
        ("failed", 3),
        "the projection follows the stream's rewritten chain"
    );
    let timeline: Vec<(i64, String)> = sqlx::query_as(
        "SELECT version, status FROM payment_timeline WHERE tenant = $1 AND payment_id = $2 ORDER BY version",
    )
    .bind(mesh.tenant.as_str())
    .bind(&payment)
    .fetch_all(&mesh.db)
    .await?;
    assert_eq!(
        timeline,
        vec![
            (1, "pending".to_owned()),
            (2, "succeeded".to_owned()),
            (3, "failed".to_owned())
        ],
        "what was projected stays on the timeline"
    );
    assert_eq!(
        paytrack_tests::workload::unbalanced_entries(&mesh).await?,
        0,
        "every journal entry balances"
    );
    // A redelivery or replay of the rewritten transition changes nothing more.
    let again = mesh.wait_for_row(&payment, 3).await?;
    assert_eq!((again.0.as_str(), again.1), ("failed", 3));
    // The bystander whose facts came after the damage stays as projected.
    let (status, version, ..) = mesh.wait_for_row("pay_bystander", 1).await?;
    assert_eq!((status.as_str(), version), ("pending", 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_status_block_is_noticed() -> anyhow::Result<()> {
    lost_transition_is_noticed(Damage::FlipByte).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_status_block_is_noticed() -> anyhow::Result<()> {
    lost_transition_is_noticed(Damage::Truncate).await
}

/// PAYTRACK_IN loses the fact that made a payment `succeeded`, after the reconciler
/// decided it. The provider redelivers it (same delivery id, same body): the lost
/// message took its de-duplication entry with it, so ingest stores the fact again,
/// and the reconciler recognises it as applied (the newest transition lists its
/// fact) and writes nothing. Nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_fact_lost_from_the_input_stream_is_not_applied_twice() -> anyhow::Result<()> {
    let mut mesh = Mesh::start().await?;
    let payment = "pay_input_damaged";
    assert_eq!(
        mesh.post_webhook("in_1", &Mesh::webhook_body(payment, "pending", "m_1"))
            .await?
            .status(),
        200
    );
    mesh.wait_for_row(payment, 1).await?;
    // Made after the first report: the provider's time orders the two.
    let succeeded = Mesh::webhook_body(payment, "succeeded", "m_1");
    assert_eq!(mesh.post_webhook("in_2", &succeeded).await?.status(), 200);
    mesh.wait_for_row(payment, 2).await?;
    let lost_seq = stream_last_seq(&mesh.js, subjects::STREAM_IN).await?;

    mesh.nats.stop();
    damage_record(&mesh.nats.store_dir(), subjects::STREAM_IN, lost_seq, Damage::Truncate)?;
    mesh.nats.restart().await?;
    let after_damage = stream_last_seq(&mesh.js, subjects::STREAM_IN).await?;
    assert!(after_damage < lost_seq, "the fact is gone from PAYTRACK_IN");

    // The provider's redelivery is stored again, not refused as a duplicate.
    let response = mesh.post_webhook("in_2", &succeeded).await?;
    assert_eq!(response.status(), 200, "{}", response.text().await?);
    let stored = stream_last_seq(&mesh.js, subjects::STREAM_IN).await?;
    assert!(
        stored > after_damage,
        "the redelivery is stored, not taken for a duplicate"
    );
    let reconciler = mesh
        .js
        .get_stream(subjects::STREAM_IN)
        .await?
        .get_consumer::<jetstream::consumer::pull::Config>(paytrack_nats::CONSUMER_RECONCILER)
        .await
        .map_err(|e| anyhow::anyhow!("the reconciler's consumer: {e}"))?;
    eventually(WAIT, "the reconciler to decide the redelivered fact", || async {
        let info = reconciler.get_info().await.ok()?;
        (info.ack_floor.stream_sequence >= stored).then_some(())
    })
    .await?;

    let chain = facts::chain(&mesh.js, &mesh.tenant, payment).await?;
    let statuses: Vec<&str> = chain.iter().map(|t| t.status.as_str()).collect();
    assert_eq!(statuses, ["pending", "succeeded"], "nothing applied twice");
    let (status, version, ..) = mesh.wait_for_row(payment, 2).await?;
    assert_eq!((status.as_str(), version), ("succeeded", 2));
    Ok(())
}

/// `history_lost` and `history_diverged` take the path every alert takes: they are
/// published on PAYTRACK_ALERT (so the live `alerts` channel shows them), once each,
/// and a rebuild of the projection from the streams restores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_alerts_are_published_and_survive_a_rebuild() -> anyhow::Result<()> {
    let mut mesh = Mesh::start().await?;
    let payment = "pay_history_alerts";
    for (delivery, status, version) in [("ha_1", "pending", 1), ("ha_2", "succeeded", 2)] {
        let response = mesh
            .post_webhook(delivery, &Mesh::webhook_body(payment, status, "m_1"))
            .await?;
        anyhow::ensure!(response.status() == 200, "webhook answered {}", response.status());
        mesh.wait_for_row(payment, version).await?;
    }
    let subject = subjects::status(&mesh.tenant, &MerchantId::new("m_1")?, &PaymentId::new(payment)?);
    let lost_seq = mesh
        .js
        .get_stream(subjects::STREAM_STATUS)
        .await?
        .get_last_raw_message_by_subject(&subject)
        .await?
        .sequence;
    mesh.nats.stop();
    damage_record(
        &mesh.nats.store_dir(),
        subjects::STREAM_STATUS,
        lost_seq,
        Damage::Truncate,
    )?;
    mesh.nats.restart().await?;
    let response = mesh
        .post_webhook("ha_3", &Mesh::webhook_body(payment, "failed", "m_1"))
        .await?;
    anyhow::ensure!(response.status() == 200, "webhook answered {}", response.status());
    mesh.wait_for_row(payment, 3).await?;

    let alert_stream = mesh.js.get_stream(subjects::STREAM_ALERT).await?;
    for kind in ["history_lost", "history_diverged"] {
        let published = eventually(WAIT, &format!("{kind} on PAYTRACK_ALERT"), || async {
            let message = alert_stream
                .get_last_raw_message_by_subject(&subjects::alert(Some(&mesh.tenant), kind))
                .await
                .ok()?;
            paytrack_shared::envelope::decode::<paytrack_shared::envelope::Alert>(&message.payload).ok()
        })
        .await?;
        assert_eq!(
            (published.kind.as_str(), published.payment_id.as_str()),
            (kind, payment)
        );
        // The stored alert knows where it is in the stream.
        let seq: i64 = eventually(WAIT, "the alert's position recorded", || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT alert_seq FROM alerts WHERE tenant = $1 AND payment_id = $2 AND kind = $3 AND alert_seq > 0",
            )
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .bind(kind)
            .fetch_optional(&mesh.db)
            .await
            .ok()
            .flatten()
        })
        .await?;
        assert!(seq > 0);
    }
    let published: Vec<(String, String)> = alerts(&mesh, payment).await?;
    let rebuilt = sqlx::PgPool::connect(&paytrack_tests::pg::fresh_database().await?).await?;
    let js = jetstream::new(mesh.nats.connect_as(paytrack_nats::Role::Projector).await?);
    paytrack_ledger_projector::rebuild::rebuild(&js, &rebuilt).await?;
    let mut restored: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, detail FROM alerts WHERE tenant = $1 AND payment_id = $2")
            .bind(mesh.tenant.as_str())
            .bind(payment)
            .fetch_all(&rebuilt)
            .await?;
    let mut live = published;
    live.sort();
    restored.sort();
    assert!(
        live.iter().any(|(kind, _)| kind == "history_lost") && live.iter().any(|(kind, _)| kind == "history_diverged"),
        "{live:?}"
    );
    assert_eq!(restored, live, "a rebuild restores the projector's alerts");
    Ok(())
}
