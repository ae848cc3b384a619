//! The Rust reader client (`paytrack-reader`, clients/rust) reads one tenant's payment
//! histories as that tenant's reader: in order, across a restart of the nats-server
//! with no gap and no duplicate, from a saved cursor after the program restarts, and
//! it reports a skipped position as a gap. A real nats-server with the rendered users;
//! transitions are published as the reconciler would.

use std::time::Duration;

use anyhow::Context;
use paytrack_nats::Role;
use paytrack_reader::{Cursor, Login, PaymentHistories, ReadError};
use paytrack_shared::envelope::{self, Transition};
use paytrack_shared::{PaymentId, TenantId, subjects};
use paytrack_tests::NatsServer;
use paytrack_tests::workload::{self, Plan};
use secrecy::ExposeSecret;

/// How long one entry may take, a server restart included, on a loaded machine.
const ENTRY: Duration = Duration::from_secs(90);

const ACME: &str = "acme";

/// A server with a reader for acme and the layout applied.
async fn server() -> anyhow::Result<NatsServer> {
    let nats = NatsServer::start_with_tenant_readers(&[ACME]).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    Ok(nats)
}

/// Publishes `versions` of every plan for `tenant` as the reconciler, version by
/// version across the plans (interleaved as live traffic is).
async fn publish(
    nats: &NatsServer,
    tenant: &str,
    plans: &[Plan],
    versions: std::ops::RangeInclusive<usize>,
) -> anyhow::Result<Vec<(String, u64)>> {
    let js = async_nats::jetstream::new(nats.connect_as(Role::Reconciler).await?);
    let tenant = TenantId::new(tenant)?;
    let mut published = Vec::new();
    for version in versions {
        for plan in plans.iter().filter(|p| p.statuses.len() >= version) {
            let t: Transition = workload::transition(&tenant, plan, version)?;
            let subject = subjects::status(&t.tenant, &t.merchant_id, &t.payment_id);
            js.publish(subject, envelope::encode(&t)).await?.await?;
            published.push((plan.payment.clone(), version as u64));
        }
    }
    Ok(published)
}

/// A client connected as acme's reader, reading from `cursor`.
async fn histories(nats: &NatsServer, cursor: Cursor) -> anyhow::Result<PaymentHistories> {
    let login = Login::tenant(
        TenantId::new(ACME)?,
        nats.tenant_reader_password(ACME).expose_secret().to_owned(),
    );
    let client = paytrack_reader::connect(&nats.url(), &login).await?;
    Ok(PaymentHistories::new(client, login.scope(), cursor))
}

/// Reads `count` entries as (payment, version), riding out interruptions (a restarted
/// server); a gap or anything else fails the test.
async fn read(histories: &mut PaymentHistories, count: usize) -> anyhow::Result<Vec<(String, u64)>> {
    let mut read = Vec::new();
    while read.len() < count {
        let next = tokio::time::timeout(ENTRY, histories.next())
            .await
            .with_context(|| format!("entry {} never came", read.len() + 1))?;
        match next {
            Ok(entry) => {
                assert_eq!(entry.transition.tenant.as_str(), ACME, "another tenant's transition");
                assert_eq!(entry.position, histories.cursor().position());
                read.push((entry.transition.payment_id.to_string(), entry.transition.version));
            }
            Err(ReadError::Interrupted(why)) => {
                tracing::info!(%why, "interrupted; the next call resumes");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(other) => return Err(other).context("reading acme's histories"),
        }
    }
    Ok(read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resumes_after_a_server_restart_and_a_program_restart_with_no_gap_and_no_duplicate()
-> anyhow::Result<()> {
    paytrack_shared::telemetry::init_for_tests();
    let mut nats = server().await?;
    let plans = workload::plans("pay_", 3);
    // Another tenant's traffic on the same subjects' shape: never read.
    publish(&nats, "globex", &plans, 1..=4).await?;
    let before = publish(&nats, ACME, &plans, 1..=2).await?;

    let mut reader = histories(&nats, Cursor::beginning()).await?;
    assert_eq!(read(&mut reader, before.len()).await?, before);

    // The server is killed and restarted (its store kept); the client reconnects by
    // itself and goes on from its last position.
    nats.stop();
    nats.restart().await?;
    let after = publish(&nats, ACME, &plans, 3..=4).await?;
    publish(&nats, "globex", &plans, 1..=1).await?;
    assert_eq!(
        read(&mut reader, after.len()).await?,
        after,
        "after the restart: exactly the new transitions, in order"
    );

    // The program restarts: a new connection from the saved cursor reads only what
    // came since.
    let saved = reader.cursor().clone();
    drop(reader);
    let more = publish(&nats, ACME, &workload::plans("late_", 1), 1..=2).await?;
    let mut reader = histories(&nats, saved).await?;
    assert_eq!(read(&mut reader, more.len()).await?, more);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_a_skipped_position_as_a_gap() -> anyhow::Result<()> {
    paytrack_shared::telemetry::init_for_tests();
    let nats = server().await?;
    // pay_1 has four versions (ach_debit: initiated, pending, succeeded, returned).
    let plans = workload::plans("pay_", 2);
    let all = publish(&nats, ACME, &plans, 1..=4).await?;

    let mut reader = histories(&nats, Cursor::beginning()).await?;
    let mut positions = Vec::new();
    for _ in 0..all.len() {
        let entry = tokio::time::timeout(ENTRY, reader.next())
            .await
            .context("history never came")??;
        positions.push((
            entry.transition.payment_id.to_string(),
            entry.transition.version,
            entry.position,
        ));
    }
    let position_of = |payment: &str, version: u64| {
        positions
            .iter()
            .find(|(p, v, _)| p == payment && *v == version)
            .map(|(_, _, position)| *position)
            .context("not read")
    };

    // Resume past pay_1's version 2 while the cursor knows only its version 1: the
    // position of version 2 was skipped.
    let tenant = TenantId::new(ACME)?;
    let pay_1 = PaymentId::new("pay_1")?;
    let cursor = Cursor::resume(position_of("pay_1", 2)?, [((tenant.clone(), pay_1.clone()), 1)]);
    let mut resumed = histories(&nats, cursor).await?;
    let mut gaps = Vec::new();
    let mut read = Vec::new();
    while read.len() < 2 {
        match tokio::time::timeout(ENTRY, resumed.next())
            .await
            .context("history never came")?
        {
            Ok(entry) => read.push((entry.transition.payment_id.to_string(), entry.transition.version)),
            Err(ReadError::Gap(gap)) => gaps.push(gap),
            Err(ReadError::Interrupted(_)) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = &gaps[0];
    assert_eq!(
        (&gap.tenant, &gap.payment, gap.expected, gap.got),
        (&tenant, &pay_1, 2, 3)
    );
    assert_eq!(gap.position, position_of("pay_1", 3)?);
    // Reading goes on after the gap: pay_0's version 3 (unknown to the cursor, so taken
    // as it comes) before it, pay_1's version 4 after it.
    assert_eq!(read, [("pay_0".to_owned(), 3), ("pay_1".to_owned(), 4)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_tenant_reader_reads_every_tenants_histories_apart() -> anyhow::Result<()> {
    let nats = server().await?;
    // The same payment ids in two tenants: two histories, each from version 1.
    let plans = workload::plans("pay_", 2);
    let mut expected = Vec::new();
    for version in 1..=2 {
        for tenant in [ACME, "globex"] {
            let published = publish(&nats, tenant, &plans, version..=version).await?;
            expected.extend(published.into_iter().map(|(p, v)| (tenant.to_owned(), p, v)));
        }
    }
    let login = Login::all_tenants(nats.password(Role::Reader).expose_secret().to_owned());
    let client = paytrack_reader::connect(&nats.url(), &login).await?;
    let mut reader = PaymentHistories::new(client, login.scope(), Cursor::beginning());
    let mut read = Vec::new();
    while read.len() < expected.len() {
        let entry = tokio::time::timeout(ENTRY, reader.next())
            .await
            .context("history never came")?
            .context("reading every tenant's histories")?;
        let t = entry.transition;
        read.push((t.tenant.to_string(), t.payment_id.to_string(), t.version));
    }
    assert_eq!(read, expected);
    Ok(())
}
