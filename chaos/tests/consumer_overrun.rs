//! A power loss under the default sync cuts PAYTRACK_IN back to its last fsync while
//! the reconciler's durable consumer keeps a position past the stream's new end
//! (its state newer than the stream's blocks). The
//! stream hands those sequence numbers out again; the reconciler must decide the
//! facts stored there instead of skipping them (docs/durability.md).

use std::time::Duration;

use async_nats::jetstream;
use paytrack_chaos::cluster::{Cluster, SyncPolicy};
use paytrack_nats::{Layout, Role};
use paytrack_shared::envelope::{self, ConsumerRewound};
use paytrack_shared::{TenantId, subjects};
use paytrack_tests::{eventually, facts};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

/// Generous bound for a cluster on a loaded machine.
const WAIT: Duration = Duration::from_secs(120);

/// Publishes `payment`'s create command (retried while the cluster elects its
/// leaders) and waits until the reconciler has decided it.
async fn decided(js: &jetstream::Context, tenant: &TenantId, payment: &str) -> anyhow::Result<()> {
    let fact = facts::create(tenant, payment, "rtp", "stdwebhooks")?;
    eventually(WAIT, "the fact stored", || async {
        facts::publish(js, &fact).await.ok()
    })
    .await?;
    eventually(WAIT, &format!("{payment} decided"), || async {
        let chain = facts::chain(js, tenant, payment).await.ok()?;
        (!chain.is_empty()).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn facts_stored_after_a_power_loss_cut_the_stream_back_are_decided() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(SyncPolicy::Default).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([
        ("nats_url", cluster.urls()),
        ("nats_replicas", "3".to_owned()),
        (
            "nats_reconciler_password",
            cluster.password(Role::Reconciler).expose_secret().to_owned(),
        ),
    ])?;
    cluster.lay_out(&Layout::from_settings(&settings)).await?;
    let shutdown = CancellationToken::new();
    let reconciler = tokio::spawn(paytrack_reconciler::run(
        paytrack_reconciler::Config::from_settings(&settings),
        shutdown.clone(),
    ));
    let js = jetstream::new(cluster.connect_as(Role::Admin).await?);
    let tenant = TenantId::new("acme")?;

    decided(&js, &tenant, "pay_synced").await?;
    cluster.mark_synced();
    // Decided and acknowledged, but only in the page cache when the power goes.
    for payment in ["pay_unsynced_1", "pay_unsynced_2", "pay_unsynced_3"] {
        decided(&js, &tenant, payment).await?;
    }
    cluster.power_loss_keeping_consumer_state();
    cluster.restart_all().await?;

    // New facts take the sequence numbers the stream hands out again.
    for payment in ["pay_after_1", "pay_after_2"] {
        decided(&js, &tenant, payment).await?;
    }
    // The rewind is said: an operator alert on PAYTRACK_ALERT naming the consumer.
    // Published by the rewind, which may land after the facts it lets through.
    let alerts = js.get_stream(subjects::STREAM_ALERT).await?;
    let subject = subjects::alert(None, subjects::ALERT_CONSUMER_REWOUND);
    let alert = eventually(Duration::from_secs(60), "the consumer_rewound alert", || async {
        alerts.get_last_raw_message_by_subject(&subject).await.ok()
    })
    .await?;
    let rewound: ConsumerRewound = envelope::decode(&alert.payload)?;
    assert_eq!(
        (rewound.stream.as_str(), rewound.consumer.as_str()),
        (subjects::STREAM_IN, paytrack_nats::CONSUMER_RECONCILER)
    );
    assert!(rewound.delivered > rewound.stream_last, "{rewound:?}");
    assert!(rewound.restart_at <= rewound.stream_last + 1, "{rewound:?}");
    shutdown.cancel();
    reconciler.await??;
    Ok(())
}
