//! A reader scoped to one tenant (`reader-<tenant>`, generated per tenant by
//! `paytrack_nats::auth::TenantReader`) reads its own tenant's history and live
//! events, and the server refuses it everything of another tenant's: a consumer
//! filtered on another tenant, a consumer without a filter, gets of single messages,
//! stream info (which lists subjects), core subscriptions and other users' inboxes.
//! It lives in an account of its own, so neither an API answer to a reply subject it
//! names nor a push consumer's deliveries reach the services' subjects or another
//! tenant's, and its account's mirrors hold its tenant's messages alone.
//!
//! The server is a real nats-server started with the rendered configuration. A refusal
//! for permissions is observed as the server's permissions-violation error on the
//! reader's connection; a refusal of JetStream itself as an error answer.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;
use paytrack_nats::Role;
use paytrack_shared::{TenantId, readers};
use paytrack_tests::NatsServer;
use paytrack_tests::probe::{ANSWER, Probe};

const ACME: &str = "acme";
const GLOBEX: &str = "globex";

/// Publishes `count` transitions of `tenant` as the reconciler, payloads `<tenant><n>`.
async fn transitions(nats: &NatsServer, tenant: &str, count: usize) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(nats.connect_as(Role::Reconciler).await?);
    for n in 0..count {
        js.publish(
            format!("paytrack.status.{tenant}.m_1.pay_{n}"),
            format!("{tenant}{n}").into(),
        )
        .await?
        .await?;
    }
    Ok(())
}

/// What a consumer create of `filter` on `mirror` sends, named `name`.
fn consumer_create(mirror: &str, name: &str, filter: &str) -> serde_json::Value {
    serde_json::json!({"stream_name": mirror, "config": {
        "name": name, "filter_subject": filter, "ack_policy": "none", "deliver_policy": "all",
    }})
}

/// Reads `count` messages of `tenant`'s history from the status mirror as that
/// tenant's reader, with a named ordered consumer (the create that names its filter).
async fn read_history(probe: &Probe, tenant: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let js = async_nats::jetstream::new(probe.client.clone());
    let mirror = js.get_stream_no_info(readers::STATUS_MIRROR).await?;
    let consumer = mirror
        .create_consumer(OrderedConfig {
            name: Some(format!("history-{}", uuid::Uuid::new_v4().simple())),
            filter_subject: readers::tenant_status(&TenantId::new(tenant)?),
            ..Default::default()
        })
        .await
        .with_context(|| format!("{} creates its ordered consumer", probe.user))?;
    let mut messages = consumer.messages().await?;
    let mut read = Vec::new();
    while read.len() < count {
        let message = tokio::time::timeout(ANSWER, messages.next())
            .await
            .context("history never arrived")?
            .context("history ended")??;
        read.push(String::from_utf8(message.payload.to_vec())?);
    }
    Ok(read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reader_reads_its_own_tenant_and_is_refused_anothers() -> anyhow::Result<()> {
    let nats = NatsServer::start_with_tenant_readers(&[ACME, GLOBEX]).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    transitions(&nats, ACME, 3).await?;
    transitions(&nats, GLOBEX, 2).await?;

    // Its own history, from the mirror, and nothing of another tenant's in it.
    let mut acme = Probe::as_tenant_reader(&nats, ACME).await?;
    assert_eq!(read_history(&acme, ACME, 3).await?, ["acme0", "acme1", "acme2"]);
    let globex = Probe::as_tenant_reader(&nats, GLOBEX).await?;
    assert_eq!(read_history(&globex, GLOBEX, 2).await?, ["globex0", "globex1"]);

    // Its own live events, on a plain subscription.
    let mut live = acme.client.subscribe("paytrack.status.acme.>").await?;
    acme.client.flush().await?;
    let reconciler = nats.connect_as(Role::Reconciler).await?;
    let seen = paytrack_tests::nats::publish_until_seen(
        &reconciler,
        "paytrack.status.acme.m_1.pay_live",
        b"live",
        &mut live,
        ANSWER,
    )
    .await
    .context("acme's reader never saw its transition")?;
    assert_eq!(&seen.payload[..], b"live");

    // Consumers on another tenant's filter, in every form of the create.
    let mirror = readers::STATUS_MIRROR;
    let theirs = "paytrack.status.globex.>";
    let body = consumer_create(mirror, "peek", theirs);
    for subject in [
        format!("$JS.API.CONSUMER.CREATE.{mirror}.peek.{theirs}"),
        format!("$JS.API.CONSUMER.CREATE.{mirror}.peek.paytrack.status.globex.m_1.pay_0"),
        format!("$JS.API.CONSUMER.CREATE.{mirror}.peek.paytrack.checkpoint.globex.>"),
        format!("$JS.API.CONSUMER.CREATE.{mirror}.peek.paytrack.status.*.>"),
        format!("$JS.API.CONSUMER.CREATE.{mirror}.peek.paytrack.>"),
        format!("$JS.API.CONSUMER.CREATE.{mirror}.peek.>"),
        format!(
            "$JS.API.CONSUMER.CREATE.{}.peek.paytrack.outcome.globex.>",
            readers::OUTCOME_MIRROR
        ),
        format!(
            "$JS.API.CONSUMER.CREATE.{}.peek.paytrack.alert.globex.>",
            readers::ALERT_MIRROR
        ),
    ] {
        acme.request_refused(&subject, &body).await?;
    }
    // Unfiltered creates (the nameless one, the named one without a filter, the
    // legacy durable one) would take any filter in their body: refused.
    for subject in [
        format!("$JS.API.CONSUMER.CREATE.{mirror}"),
        format!("$JS.API.CONSUMER.CREATE.{mirror}.peek"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{mirror}.peek"),
    ] {
        acme.request_refused(&subject, &body).await?;
        acme.request_refused(&subject, &consumer_create(mirror, "peek", "paytrack.status.acme.>"))
            .await?;
    }
    // The filtered create of its own tenant with another filter (or several) in the
    // body: JetStream refuses the mismatch.
    let own = format!("$JS.API.CONSUMER.CREATE.{mirror}.peek.paytrack.status.acme.>");
    acme.request_failed(&own, &body)
        .await?
        .context("refused for permissions, not by JetStream")?;
    let several = serde_json::json!({"stream_name": mirror, "config": {"name": "peek", "ack_policy": "none",
        "filter_subjects": ["paytrack.status.acme.>", theirs]}});
    acme.request_failed(&own, &several)
        .await?
        .context("refused for permissions, not by JetStream")?;
    // Nor on the services' streams.
    acme.request_refused(
        "$JS.API.CONSUMER.CREATE.PAYTRACK_STATUS.peek.paytrack.status.acme.>",
        &consumer_create("PAYTRACK_STATUS", "peek", "paytrack.status.acme.>"),
    )
    .await?;

    // Gets of single messages and stream info (its subjects list names every
    // tenant's payments).
    let by_seq = serde_json::json!({"seq": 4});
    for subject in [
        format!("$JS.API.DIRECT.GET.{mirror}"),
        format!("$JS.API.DIRECT.GET.{mirror}.paytrack.status.globex.m_1.pay_0"),
        format!("$JS.API.DIRECT.GET.{mirror}.paytrack.status.acme.m_1.pay_0"),
        format!("$JS.API.STREAM.MSG.GET.{mirror}"),
        "$JS.API.DIRECT.GET.PAYTRACK_STATUS".to_owned(),
    ] {
        acme.request_refused(&subject, &by_seq).await?;
    }
    let subjects_filter = serde_json::json!({"subjects_filter": ">"});
    for stream in [mirror, "PAYTRACK_STATUS"] {
        acme.request_refused(&format!("$JS.API.STREAM.INFO.{stream}"), &subjects_filter)
            .await?;
    }

    // Core subscriptions to another tenant's, or every tenant's, live subjects, and
    // to other users' inboxes.
    for subject in [
        "paytrack.status.globex.>",
        "paytrack.status.>",
        "paytrack.status.*.m_1.pay_0",
        "paytrack.checkpoint.globex.>",
        "paytrack.outcome.globex.>",
        "paytrack.alert.globex.>",
        "paytrack.in.acme.>",
        "_INBOX.>",
        "_INBOX_reader-globex.>",
        ">",
    ] {
        acme.subscribe_refused(subject).await?;
    }
    Ok(())
}

/// Messages PAYTRACK_STATUS holds, as the admin sees them.
async fn status_messages(admin: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    Ok(admin.get_stream("PAYTRACK_STATUS").await?.info().await?.state.messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reader_cannot_deliver_its_history_into_another_tenants_subjects() -> anyhow::Result<()> {
    let nats = NatsServer::start_with_tenant_readers(&[ACME, GLOBEX]).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    transitions(&nats, ACME, 1).await?;
    let admin = async_nats::jetstream::new(nats.admin_client().await?);
    let before = status_messages(&admin).await?;
    let mut acme = Probe::as_tenant_reader(&nats, ACME).await?;
    let mirror = readers::STATUS_MIRROR;
    let create = format!("$JS.API.CONSUMER.CREATE.{mirror}.push.paytrack.status.acme.>");
    let push_into = |name: &str, deliver: &str| {
        serde_json::json!({"stream_name": mirror, "config": {
            "name": name, "filter_subject": "paytrack.status.acme.>", "ack_policy": "none",
            "deliver_policy": "all", "deliver_subject": deliver,
        }})
    };

    // A push consumer into a subject the reader itself listens on delivers, but only
    // to the reader: PAYTRACK_STATUS, which stores that subject, gains nothing.
    let own = "paytrack.status.acme.m_1.pay_forged";
    let mut listening = acme.client.subscribe(own).await?;
    acme.client.flush().await?;
    let own_create = format!("$JS.API.CONSUMER.CREATE.{mirror}.echo.paytrack.status.acme.>");
    if let Some(answer) = acme.request(&own_create, &push_into("echo", own)).await?
        && answer.get("error").is_none()
    {
        let delivered = tokio::time::timeout(ANSWER, listening.next())
            .await
            .context("the push consumer never delivered to its own listener")?
            .context("subscription ended")?;
        assert_eq!(&delivered.payload[..], b"acme0");
    }

    // A push consumer whose deliver subject is another tenant's live subject would
    // forge transitions there (PAYTRACK_STATUS stores that subject): it is refused, or
    // it finds nobody listening (its deliveries stay in the reader's account).
    let forged = "paytrack.status.globex.m_1.pay_forged";
    let Some(answer) = acme.request(&create, &push_into("push", forged)).await? else {
        return Ok(());
    };
    if answer.get("error").is_some() {
        return Ok(());
    }
    let js = async_nats::jetstream::new(acme.client.clone());
    let deadline = tokio::time::Instant::now() + ANSWER;
    loop {
        let stored = status_messages(&admin).await?;
        anyhow::ensure!(
            stored == before,
            "a reader's push consumer stored {} message(s)",
            stored - before
        );
        let info = js.get_stream_no_info(mirror).await?.consumer_info("push").await?;
        if !info.push_bound {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "something listens on {forged} where the reader's consumer delivers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A reader of tenant A reaches nothing of tenant B's, not even through what its
/// account imports: its account's mirror holds A's messages alone, and the services'
/// JetStream API its mirrors use is closed to its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_readers_account_holds_no_other_tenants_history() -> anyhow::Result<()> {
    let nats = NatsServer::start_with_tenant_readers(&[ACME, GLOBEX]).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    transitions(&nats, GLOBEX, 2).await?;
    transitions(&nats, ACME, 2).await?;
    transitions(&nats, GLOBEX, 1).await?;
    let admin_client = nats.admin_client().await?;
    let last = async_nats::jetstream::new(admin_client.clone())
        .get_stream("PAYTRACK_STATUS")
        .await?
        .get_last_raw_message_by_subject("paytrack.status.acme.>")
        .await?
        .sequence;

    // The admin looks into acme's account: once its mirror has copied acme's last
    // transition, it holds acme's two transitions and nothing else.
    let reader = paytrack_nats::auth::TenantReader::new(TenantId::new(ACME)?)?;
    let in_acme = async_nats::jetstream::with_prefix(admin_client, &reader.api_prefix());
    let deadline = tokio::time::Instant::now() + ANSWER;
    let info = loop {
        let mut stream = in_acme
            .get_stream(readers::STATUS_MIRROR)
            .await
            .context("acme's account has no status mirror")?;
        let info = stream.info().await?.clone();
        if info.state.last_sequence >= last {
            break info;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "acme's mirror never caught up: {:?}",
            info.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.state.messages, 2, "{:?}", info.state);
    let mut subjects = in_acme
        .get_stream(readers::STATUS_MIRROR)
        .await?
        .info_with_subjects(">")
        .await?;
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject?;
        assert!(
            subject.starts_with("paytrack.status.acme."),
            "acme's mirror holds {subject}"
        );
    }

    // Its user may not use the services' API its mirrors reach the sources with, nor
    // listen where the sources deliver.
    let mut acme = Probe::as_tenant_reader(&nats, ACME).await?;
    let body = consumer_create("PAYTRACK_STATUS", "peek", "paytrack.status.globex.>");
    for subject in [
        "$JS.paytrack.API.CONSUMER.CREATE.PAYTRACK_STATUS.peek.paytrack.status.globex.>",
        "$JS.paytrack.API.CONSUMER.CREATE.PAYTRACK_STATUS",
    ] {
        acme.request_refused(subject, &body).await?;
    }
    acme.subscribe_refused(&format!("{}.>", reader.mirror_deliver_prefix()))
        .await?;
    // And what it reads from its mirror is its own tenant's.
    assert_eq!(read_history(&acme, ACME, 2).await?, ["acme0", "acme1"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_readers_api_answer_never_lands_in_another_tenants_subjects() -> anyhow::Result<()> {
    let nats = NatsServer::start_with_tenant_readers(&[ACME]).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    let acme = Probe::as_tenant_reader(&nats, ACME).await?;
    let forged = "paytrack.status.globex.m_1.pay_reply";
    let admin = async_nats::jetstream::new(nats.admin_client().await?);
    let before = admin.get_stream("PAYTRACK_STATUS").await?.info().await?.state.messages;
    acme.client
        .publish_with_reply("$JS.API.INFO", forged, "".into())
        .await?;
    // The server answers a request before a later one on the same connection: once
    // its own request is answered, the forged answer is stored or never will be.
    let js = async_nats::jetstream::new(acme.client.clone());
    js.query_account().await?;
    let after = admin.get_stream("PAYTRACK_STATUS").await?.info().await?.state.messages;
    assert_eq!(before, after, "an API answer was stored on {forged}");
    Ok(())
}

/// A reader's account reaches the services' JetStream API only for its mirrors'
/// consumer creates: neither an API answer nor a push consumer's deliveries sent to
/// the subject of another call there (a delete of a service's durable, here) act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_readers_api_answer_never_reaches_the_services_api() -> anyhow::Result<()> {
    let nats = NatsServer::start_with_tenant_readers(&[ACME]).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    let admin = async_nats::jetstream::new(nats.admin_client().await?);
    let durable = paytrack_nats::CONSUMER_PROJECTOR_STATUS;
    paytrack_nats::ensure_consumer(
        &admin,
        "PAYTRACK_STATUS",
        paytrack_nats::durable_consumer(durable, "paytrack.status.>"),
    )
    .await?;
    let acme = Probe::as_tenant_reader(&nats, ACME).await?;
    for call in [
        format!("$JS.paytrack.API.CONSUMER.DELETE.PAYTRACK_STATUS.{durable}"),
        format!("$JS.API.CONSUMER.DELETE.PAYTRACK_STATUS.{durable}"),
    ] {
        acme.client.publish_with_reply("$JS.API.INFO", call, "".into()).await?;
    }
    // And a push consumer delivering its history there.
    transitions(&nats, ACME, 1).await?;
    let mirror = readers::STATUS_MIRROR;
    let mut acme = acme;
    let push = serde_json::json!({"stream_name": mirror, "config": {
        "name": "push", "filter_subject": "paytrack.status.acme.>", "ack_policy": "none",
        "deliver_policy": "all",
        "deliver_subject": format!("$JS.paytrack.API.CONSUMER.DELETE.PAYTRACK_STATUS.{durable}"),
    }});
    let _ = acme
        .request(
            &format!("$JS.API.CONSUMER.CREATE.{mirror}.push.paytrack.status.acme.>"),
            &push,
        )
        .await?;
    // Once a later request on the same connection is answered, the earlier ones
    // have been acted on or never will be.
    let js = async_nats::jetstream::new(acme.client.clone());
    js.query_account().await?;
    admin
        .get_stream("PAYTRACK_STATUS")
        .await?
        .consumer_info(durable)
        .await
        .context("a reader deleted the projector's consumer")?;
    Ok(())
}
