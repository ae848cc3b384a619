//! A payment that keeps flipping between two statuses: every transition carries at
//! most the newest 256 applied fact ids (and their count), and the payment raises a
//! `many_facts` alert once, when its transitions start dropping ids, so an operator
//! sees the loop.

use std::time::Duration;

use chrono::Utc;
use paytrack_shared::envelope::{self, APPLIED_FACT_IDS_KEPT, Alert};
use paytrack_shared::{Status, subjects};
use paytrack_tests::{Mesh, eventually, facts};

/// 300 pending/held flips on one payment: the newest transition lists 256 ids and
/// counts 300, and exactly one `many_facts` alert is raised, for the version that
/// first dropped an id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pending_held_loop_is_bounded_and_alerted_once() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let tenant = mesh.tenant.clone();
    let pay = "pay_flips";
    const FLIPS: u64 = 299;
    facts::publish(&mesh.js, &facts::create(&tenant, pay, "card", "stdwebhooks")?).await?;
    let t0 = Utc::now();
    for n in 1..=FLIPS {
        let status = if n % 2 == 1 { Status::Pending } else { Status::Held };
        let at = t0 + chrono::Duration::milliseconds(i64::try_from(n)?);
        facts::publish(
            &mesh.js,
            &facts::event(&tenant, pay, &format!("flip_{n}"), status, Some(n), at, None)?,
        )
        .await?;
    }
    let total = FLIPS + 1;
    eventually(Duration::from_secs(120), "every flip applied", || async {
        (mesh.transition_count(pay).await.ok()? as u64 == total).then_some(())
    })
    .await?;
    let chain = facts::chain(&mesh.js, &tenant, pay).await?;
    let newest = chain.last().expect("a chain");
    assert_eq!(newest.version, total);
    assert_eq!(newest.applied_fact_ids.len(), APPLIED_FACT_IDS_KEPT);
    assert_eq!(newest.applied_fact_count, total);

    let stream = mesh.js.get_stream(subjects::STREAM_ALERT).await?;
    let subject = subjects::alert(Some(&tenant), "many_facts");
    let alert = eventually(Duration::from_secs(60), "the many_facts alert", || async {
        let message = stream.get_last_raw_message_by_subject(&subject).await.ok()?;
        envelope::decode::<Alert>(&message.payload).ok()
    })
    .await?;
    assert_eq!(alert.payment_id.as_str(), pay);
    let raised: Vec<(String, usize)> = {
        use futures::TryStreamExt;
        stream.info_with_subjects(&subject).await?.try_collect().await?
    };
    assert_eq!(
        raised,
        vec![(subject.clone(), 1)],
        "raised once, not for every later flip"
    );
    Ok(())
}
