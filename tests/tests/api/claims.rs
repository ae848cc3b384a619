//! Payment claims are bounded in time: the claims bucket keeps a claim
//! `reconciler_claims_max_age_secs` after its last use (a claim in use is
//! refreshed), and a payment whose claim expired continues its one history (the
//! claim is found again from the history), never starts a second one.

use std::time::Duration;

use chrono::Utc;
use paytrack_shared::{Status, subjects};
use paytrack_tests::mesh::MeshOptions;
use paytrack_tests::{Mesh, eventually, facts};

const WAIT: Duration = Duration::from_secs(60);

/// With claims kept 2 s, an idle payment's claim expires; its next fact is decided
/// on its existing history (version 3 on the same subject, no second history), and
/// the claim is made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_claim_is_found_again_from_the_history() -> anyhow::Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        extra_settings: vec![("reconciler_claims_max_age_secs", "2".to_owned())],
        ..MeshOptions::default()
    })
    .await?;
    let tenant = mesh.tenant.clone();
    let pay = "pay_claim_ttl";
    facts::publish(&mesh.js, &facts::create(&tenant, pay, "card", "stdwebhooks")?).await?;
    facts::publish(
        &mesh.js,
        &facts::event(&tenant, pay, "ttl_p", Status::Pending, Some(1), Utc::now(), None)?,
    )
    .await?;
    mesh.wait_for_row(pay, 2).await?;

    let claims = mesh.js.get_key_value(subjects::CLAIMS_BUCKET).await?;
    let key = format!("{tenant}.{pay}");
    let status = claims.status().await?;
    assert_eq!(
        status.info.config.max_age,
        Duration::from_secs(2),
        "the bucket keeps claims as configured"
    );
    eventually(WAIT, "the idle payment's claim expired", || async {
        claims.get(&key).await.ok()?.is_none().then_some(())
    })
    .await?;

    facts::publish(
        &mesh.js,
        &facts::event(&tenant, pay, "ttl_s", Status::Succeeded, Some(2), Utc::now(), None)?,
    )
    .await?;
    mesh.wait_for_row(pay, 3).await?;
    assert_eq!(mesh.transition_count(pay).await?, 3, "one history, continued");
    let stream = mesh.js.get_stream(subjects::STREAM_STATUS).await?;
    let subjects_of_payment: Vec<String> = {
        use futures::TryStreamExt;
        stream
            .info_with_subjects(subjects::status_of_payment(
                &tenant,
                &paytrack_shared::PaymentId::new(pay)?,
            ))
            .await?
            .map_ok(|(subject, _)| subject)
            .try_collect()
            .await?
    };
    assert_eq!(subjects_of_payment.len(), 1, "{subjects_of_payment:?}");
    let claim = eventually(WAIT, "the claim made again", || async { claims.get(&key).await.ok()? }).await?;
    assert_eq!(
        subjects_of_payment[0],
        format!("paytrack.status.{tenant}.{}.{pay}", std::str::from_utf8(&claim)?)
    );
    Ok(())
}
