//! NATS refuses what a user may not do: each service publishes only its own
//! subjects (docs/contract.md §2), the read-only user publishes nothing, a connection without
//! credentials is refused. The server is a real nats-server started with the
//! configuration rendered from `paytrack_nats::auth` (the one in `nats/auth.conf`).
//!
//! A refused publish is observed as the server's permissions-violation error on the
//! publisher's connection; an allowed one as the message arriving at an admin
//! subscriber.

use std::time::Duration;

use anyhow::Context;
use async_nats::Client;
use futures::StreamExt;
use paytrack_nats::Role;
use paytrack_tests::NatsServer;
use paytrack_tests::probe::{ANSWER, Probe};
use secrecy::ExposeSecret;

const STATUS: &str = "paytrack.status.dev.m_1.pay_forged";
const CHECKPOINT: &str = "paytrack.checkpoint.dev.m_1.pay_forged";
const INBOUND: &str = "paytrack.in.dev.pay_forged";
const PUSH: &str = "paytrack.push.dev.u_1.all";
const SESSION: &str = "paytrack.session.dev.edge-1";
const OUTCOME: &str = "paytrack.outcome.dev.pay_forged";
const ALERT: &str = "paytrack.alert.dev.unclear_pending";
const DEAD: &str = "paytrack.dead.dev.x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_publishes_only_its_own_subjects() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let admin = nats.admin_client().await?;

    let mut ingest = Probe::as_role(&nats, Role::Ingest).await?;
    for subject in [INBOUND, PUSH] {
        ingest.publish_allowed(&admin, subject).await?;
    }
    for subject in [STATUS, CHECKPOINT, SESSION, OUTCOME, ALERT] {
        ingest.publish_refused(subject).await?;
    }
    // Its own KV buckets (idempotency keys, commanded payments), not the edge's presence.
    for subject in ["$KV.PAYTRACK_IDEMPOTENCY.dev.k", "$KV.PAYTRACK_COMMANDED.dev.pay_1"] {
        ingest.publish_allowed(&admin, subject).await?;
    }
    ingest.publish_refused("$KV.PAYTRACK_PRESENCE.dev.u.d.s").await?;

    let mut reconciler = Probe::as_role(&nats, Role::Reconciler).await?;
    // INBOUND: the sweep records a provider's status-query answer as a fact.
    for subject in [OUTCOME, STATUS, ALERT, INBOUND] {
        reconciler.publish_allowed(&admin, subject).await?;
    }
    for subject in [CHECKPOINT, PUSH, SESSION] {
        reconciler.publish_refused(subject).await?;
    }

    let mut projector = Probe::as_role(&nats, Role::Projector).await?;
    for subject in [CHECKPOINT, ALERT, DEAD] {
        projector.publish_allowed(&admin, subject).await?;
    }
    for subject in [STATUS, INBOUND, PUSH, SESSION] {
        projector.publish_refused(subject).await?;
    }

    let mut edge = Probe::as_role(&nats, Role::Edge).await?;
    edge.publish_allowed(&admin, SESSION).await?;
    for subject in [STATUS, CHECKPOINT, INBOUND, PUSH, ALERT] {
        edge.publish_refused(subject).await?;
    }
    // Reading is through its own ordered consumers only: never another service's durable.
    edge.publish_refused("$JS.API.CONSUMER.DELETE.PAYTRACK_STATUS.ledger-projector-status")
        .await?;
    edge.publish_refused("$JS.API.CONSUMER.MSG.NEXT.PAYTRACK_STATUS.ledger-projector-status")
        .await?;
    edge.subscribe_refused("paytrack.status.>").await?;
    // Replies to other users are not its to read.
    edge.subscribe_refused("_INBOX_ingest.>").await?;
    edge.subscribe_refused("_INBOX.>").await?;

    let mut reader = Probe::as_role(&nats, Role::Reader).await?;
    for subject in [STATUS, CHECKPOINT, INBOUND, PUSH, SESSION, OUTCOME, ALERT, DEAD] {
        reader.publish_refused(subject).await?;
    }
    reader.publish_refused("$JS.API.STREAM.DELETE.PAYTRACK_STATUS").await?;
    reader.publish_refused("$JS.API.STREAM.UPDATE.PAYTRACK_STATUS").await?;
    // It watches the documented subjects, not raw facts or session audit.
    let mut watched = reader.client.subscribe("paytrack.status.>").await?;
    // The reader cannot publish a sentinel: publish until its subscription is counted.
    let deadline = tokio::time::Instant::now() + ANSWER;
    let seen = loop {
        reconciler.client.publish(STATUS, "t".into()).await?;
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), watched.next()).await {
            break next.context("subscription ended")?;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the reader never saw a transition"
        );
    };
    assert_eq!(seen.subject.as_str(), STATUS);
    reader.subscribe_refused("paytrack.in.>").await?;
    reader.subscribe_refused("paytrack.session.>").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_valid_credentials_is_refused() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(anonymous.is_err(), "a connection without a user was accepted");
    let wrong = async_nats::ConnectOptions::with_user_and_password("reconciler".into(), "pguess".into())
        .connect(nats.url())
        .await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    // The right one is accepted.
    let right = Probe::as_role(&nats, Role::Reconciler).await?;
    right.client.flush().await?;
    Ok(())
}

/// Every stream and KV bucket stream of the layout, in the services' account.
const LAYOUT_STREAMS: [&str; 13] = [
    "PAYTRACK_IN",
    "PAYTRACK_STATUS",
    "PAYTRACK_OUTCOME",
    "PAYTRACK_PUSH",
    "PAYTRACK_ALERT",
    "PAYTRACK_SESSION",
    "PAYTRACK_DEAD",
    "KV_PAYTRACK_IDEMPOTENCY",
    "KV_PAYTRACK_COMMANDED",
    "KV_PAYTRACK_PROVIDER_REFS",
    "KV_PAYTRACK_CLAIMS",
    "KV_PAYTRACK_SWEEP",
    "KV_PAYTRACK_PRESENCE",
];

/// Every durable consumer of the layout: its stream, its name, its filter and its owner.
const DURABLES: [(&str, &str, &str, Role); 6] = [
    ("PAYTRACK_IN", "reconciler", "paytrack.in.>", Role::Reconciler),
    (
        "PAYTRACK_STATUS",
        "ledger-projector-status",
        "paytrack.status.>",
        Role::Projector,
    ),
    (
        "PAYTRACK_IN",
        "ledger-projector-evidence",
        "paytrack.in.>",
        Role::Projector,
    ),
    (
        "PAYTRACK_SESSION",
        "ledger-projector-sessions",
        "paytrack.session.>",
        Role::Projector,
    ),
    (
        "PAYTRACK_OUTCOME",
        "ledger-projector-outcomes",
        "paytrack.outcome.>",
        Role::Projector,
    ),
    (
        "PAYTRACK_ALERT",
        "ledger-projector-alerts",
        "paytrack.alert.>",
        Role::Projector,
    ),
];

/// The stream configuration `stream` has on `admin`'s server now, as JSON.
async fn config_of(admin: &Client, stream: &str) -> anyhow::Result<serde_json::Value> {
    let js = async_nats::jetstream::new(admin.clone());
    let mut handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?;
    Ok(serde_json::to_value(&handle.info().await?.config)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_but_the_admin_changes_the_layout_or_another_services_consumers() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let admin = nats.admin_client().await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    let before = {
        let mut configs = Vec::new();
        for stream in LAYOUT_STREAMS {
            configs.push(config_of(&admin, stream).await?);
        }
        configs
    };

    // The forge: PAYTRACK_STATUS sources session audit, rewritten into transitions.
    let mut forged = config_of(&admin, "PAYTRACK_STATUS").await?;
    forged["sources"] = serde_json::json!([{
        "name": "PAYTRACK_SESSION",
        "subject_transforms": [{"src": "paytrack.session.*.*", "dest": "paytrack.status.{{wildcard(1)}}.m_1.{{wildcard(2)}}"}],
    }]);

    for role in [
        Role::Ingest,
        Role::Reconciler,
        Role::Projector,
        Role::Edge,
        Role::Reader,
    ] {
        let mut probe = Probe::as_role(&nats, role).await?;
        probe
            .request_refused("$JS.API.STREAM.UPDATE.PAYTRACK_STATUS", &forged)
            .await?;
        let fresh = serde_json::json!({"name": "FORGED", "subjects": ["forged.>"]});
        probe.request_refused("$JS.API.STREAM.CREATE.FORGED", &fresh).await?;
        probe.request_refused("$JS.API.STREAM.RESTORE.FORGED", &fresh).await?;
        for (stream, config) in LAYOUT_STREAMS.iter().zip(&before) {
            for verb in ["CREATE", "UPDATE"] {
                probe
                    .request_refused(&format!("$JS.API.STREAM.{verb}.{stream}"), config)
                    .await?;
            }
            let nothing = serde_json::json!({});
            for verb in ["DELETE", "PURGE", "RESTORE", "SNAPSHOT"] {
                probe
                    .request_refused(&format!("$JS.API.STREAM.{verb}.{stream}"), &nothing)
                    .await?;
            }
            probe
                .request_refused(
                    &format!("$JS.API.STREAM.MSG.DELETE.{stream}"),
                    &serde_json::json!({"seq": 1}),
                )
                .await?;
        }
        for (stream, durable, filter, owner) in DURABLES {
            if owner == role {
                continue;
            }
            let config = serde_json::json!({
                "stream_name": stream,
                "config": {"durable_name": durable, "name": durable, "filter_subject": filter, "ack_policy": "explicit"},
            });
            for subject in [
                format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.{filter}"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.DELETE.{stream}.{durable}"),
                format!("$JS.API.CONSUMER.PAUSE.{stream}.{durable}"),
            ] {
                probe.request_refused(&subject, &config).await?;
            }
            // The nameless create makes ephemeral consumers only: JetStream itself
            // refuses a durable name there (10019).
            probe
                .request_failed(&format!("$JS.API.CONSUMER.CREATE.{stream}"), &config)
                .await?;
        }
    }

    for (stream, config) in LAYOUT_STREAMS.iter().zip(&before) {
        let mut now = config_of(&admin, stream).await?;
        let mut then = config.clone();
        // Metadata the server stamps may move; the rest must not.
        now.as_object_mut().map(|o| o.remove("metadata"));
        then.as_object_mut().map(|o| o.remove("metadata"));
        assert_eq!(now, then, "{stream} changed");
    }
    Ok(())
}

/// Waits for a service's `run` to end and returns its error, which must name what
/// is wrong with the layout.
async fn refused<E: std::fmt::Display>(
    service: &str,
    run: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<String> {
    // Boxed: a service's whole start-up is a large future for a test thread's stack.
    match tokio::time::timeout(Duration::from_secs(60), Box::pin(run)).await {
        Err(_) => anyhow::bail!("{service} kept running on a wrong layout"),
        Ok(Ok(())) => anyhow::bail!("{service} stopped without an error on a wrong layout"),
        Ok(Err(error)) => Ok(error.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_refuses_to_run_on_a_wrong_layout() -> anyhow::Result<()> {
    paytrack_shared::telemetry::init_for_tests();
    let nats = NatsServer::start().await?;
    let mut pairs = nats.settings_pairs();
    pairs.extend([
        ("nats_url", nats.url()),
        ("database_url", paytrack_tests::pg::fresh_database().await?),
        ("ingest_listen", "127.0.0.1:0".to_owned()),
        ("edge_listen", "127.0.0.1:0".to_owned()),
        ("jwt_secret", "layout-test-secret".to_owned()),
        (
            "webhook_secrets",
            "acme/stdwebhooks=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ),
    ]);
    let settings = paytrack_shared::config::Settings::from_pairs(pairs)?;
    nats.lay_out_for(&settings).await?;
    // The forge of a service user, done here as the admin could: PAYTRACK_STATUS
    // sources session audit rewritten into transitions.
    let js = async_nats::jetstream::new(nats.admin_client().await?);
    let mut status = js.get_stream("PAYTRACK_STATUS").await?.info().await?.config.clone();
    status.sources = Some(vec![async_nats::jetstream::stream::Source {
        name: "PAYTRACK_SESSION".to_owned(),
        subject_transforms: vec![async_nats::jetstream::stream::SubjectTransform {
            source: "paytrack.session.*.*".to_owned(),
            destination: "paytrack.status.{{wildcard(1)}}.m_1.{{wildcard(2)}}".to_owned(),
        }],
        ..Default::default()
    }]);
    js.update_stream(status).await?;

    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    let mut errors = Vec::new();
    errors.push(
        refused(
            "the reconciler",
            paytrack_reconciler::run(
                paytrack_reconciler::Config::from_settings(&settings),
                stop.child_token(),
            ),
        )
        .await?,
    );
    errors.push(
        refused(
            "the projector",
            paytrack_ledger_projector::run(
                paytrack_ledger_projector::Config::from_settings(&settings),
                stop.child_token(),
            ),
        )
        .await?,
    );
    let ingest = paytrack_ingest::Ingest::bind(paytrack_ingest::Config::from_settings(&settings)?).await?;
    errors.push(refused("ingest", ingest.run(stop.child_token())).await?);
    let edge = paytrack_ws_edge::WsEdge::bind(paytrack_ws_edge::Config::from_settings(&settings)?).await?;
    errors.push(refused("ws-edge", edge.run(stop.child_token())).await?);
    for error in errors {
        assert!(
            error.contains("PAYTRACK_STATUS") && error.contains("sources") && error.contains("paytrack.session"),
            "the error does not say what is wrong: {error}"
        );
    }
    Ok(())
}

/// The streams readers read history from: mirrors of the ones they watch, so that
/// their consumers never count against the services' streams.
const READER_STREAMS: [(&str, &str); 3] = [
    ("PAYTRACK_STATUS", "PAYTRACK_STATUS_READ"),
    ("PAYTRACK_OUTCOME", "PAYTRACK_OUTCOME_READ"),
    ("PAYTRACK_ALERT", "PAYTRACK_ALERT_READ"),
];

/// A reader as a standard client connects: async-nats defaults, no inbox prefix.
async fn default_reader(nats: &NatsServer) -> anyhow::Result<Client> {
    let password = nats.password(Role::Reader);
    Ok(
        async_nats::ConnectOptions::with_user_and_password("reader".into(), password.expose_secret().into())
            .connect(nats.url())
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_with_client_defaults_looks_up_reads_history_and_watches() -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let nats = NatsServer::start().await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    let reconciler = nats.connect_as(Role::Reconciler).await?;
    let written = async_nats::jetstream::new(reconciler.clone());
    for n in 0..3 {
        written
            .publish(format!("paytrack.status.acme.m_1.pay_{n}"), format!("t{n}").into())
            .await?
            .await?;
    }

    let reader = default_reader(&nats).await?;
    let js = async_nats::jetstream::new(reader.clone());
    // The lookups a client makes: the account, the stream names, a stream's info
    // (its account holds the mirrors alone).
    js.query_account().await.context("account info")?;
    let names: Vec<String> = futures::TryStreamExt::try_collect(js.stream_names()).await?;
    for (_, mirror) in READER_STREAMS {
        assert!(names.iter().any(|n| n == mirror), "{mirror} not listed: {names:?}");
        js.get_stream(mirror)
            .await
            .with_context(|| format!("info of {mirror}"))?;
    }
    // History, with an ordered consumer on the readers' mirror.
    let history = js.get_stream("PAYTRACK_STATUS_READ").await?;
    let consumer = history
        .create_consumer(OrderedConfig {
            filter_subject: "paytrack.status.acme.>".into(),
            ..Default::default()
        })
        .await
        .context("ordered consumer on the mirror")?;
    let first_name = consumer.cached_info().name.clone();
    let mut messages = consumer.messages().await?;
    for n in 0..3 {
        let message = tokio::time::timeout(ANSWER, messages.next())
            .await
            .context("history never arrived")?
            .context("history ended")??;
        assert_eq!(&message.payload[..], format!("t{n}").as_bytes());
    }
    // The ordered consumer recovers when its consumer is lost (as after a server
    // restart): the client re-creates it under a name, which readers may do too. The
    // admin reaches the reader's account through the API it exports.
    let in_readers_account = async_nats::jetstream::with_prefix(
        nats.admin_client().await?,
        &paytrack_nats::ReaderAccount::AllTenants.api_prefix(),
    );
    in_readers_account
        .delete_consumer_from_stream(&first_name, "PAYTRACK_STATUS_READ")
        .await?;
    written
        .publish("paytrack.status.acme.m_1.pay_3", "t3".into())
        .await?
        .await?;
    let message = tokio::time::timeout(Duration::from_secs(90), messages.next())
        .await
        .context("the ordered consumer never recovered")?
        .context("history ended")??;
    assert_eq!(&message.payload[..], b"t3");
    // Live: a new transition arrives on a plain subscription.
    let mut watched = reader.subscribe("paytrack.status.>").await?;
    reader.flush().await?;
    let seen = paytrack_tests::nats::publish_until_seen(
        &reconciler,
        "paytrack.status.acme.m_1.pay_live",
        b"live",
        &mut watched,
        ANSWER,
    )
    .await
    .context("the reader never saw a transition")?;
    assert_eq!(&seen.payload[..], b"live");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_expiring_consumers_on_its_mirrors_only_and_never_another_users_replies() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    let mut reader = Probe::as_role(&nats, Role::Reader).await?;
    let durable = |stream: &str, name: &str| serde_json::json!({"stream_name": stream, "config": {"durable_name": name, "ack_policy": "explicit"}});
    for (source, mirror) in READER_STREAMS {
        // No consumer at all on the services' streams.
        for subject in [
            format!("$JS.API.CONSUMER.CREATE.{source}"),
            format!("$JS.API.CONSUMER.CREATE.{source}.mine"),
            format!("$JS.API.CONSUMER.CREATE.{source}.mine.paytrack.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{source}.mine"),
        ] {
            reader.request_refused(&subject, &durable(source, "mine")).await?;
        }
        reader
            .request_refused(
                &format!("$JS.API.CONSUMER.DURABLE.CREATE.{mirror}.mine"),
                &durable(mirror, "mine"),
            )
            .await?;
        // On its mirror, a consumer given a durable name still expires: the server
        // gives it the mirror's inactivity limit.
        let made = reader
            .request(
                &format!("$JS.API.CONSUMER.CREATE.{mirror}.mine"),
                &durable(mirror, "mine"),
            )
            .await?
            .context("a create on the mirror was refused")?;
        let limit = paytrack_nats::READER_INACTIVE_LIMIT.as_nanos() as u64;
        assert_eq!(made["config"]["inactive_threshold"].as_u64(), Some(limit), "{made}");
        // And it cannot ask for a longer life.
        let forever = serde_json::json!({"stream_name": mirror, "config": {"durable_name": "forever",
            "ack_policy": "explicit", "inactive_threshold": 365u64 * 86_400 * 1_000_000_000}});
        reader
            .request_failed(&format!("$JS.API.CONSUMER.CREATE.{mirror}.forever"), &forever)
            .await?;
    }

    // Replies: the reader's default inbox holds none of the services' or the admin's.
    for subject in ["_INBOX_admin.>", "_INBOX_ingest.>", "_INBOX_ws-edge.>", ">"] {
        reader.subscribe_refused(subject).await?;
    }
    // Nor may the admin take the readers' inbox (a client of its own must use
    // `_INBOX_admin`).
    Probe::as_role(&nats, Role::Admin)
        .await?
        .subscribe_refused("_INBOX.>")
        .await?;
    let mut inbox = reader.client.subscribe("_INBOX.>").await?;
    for role in [Role::Admin, Role::Ingest, Role::Reconciler, Role::Projector, Role::Edge] {
        let client = nats.connect_as(role).await?;
        async_nats::jetstream::new(client)
            .get_stream("PAYTRACK_STATUS")
            .await
            .with_context(|| format!("{role:?} reads stream info"))?;
    }
    let own = reader.client.new_inbox();
    reader
        .client
        .publish_with_reply("$JS.API.STREAM.INFO.PAYTRACK_STATUS_READ", own.clone(), "".into())
        .await?;
    let first = tokio::time::timeout(ANSWER, inbox.next())
        .await
        .context("the reader's own reply never arrived")?
        .context("inbox ended")?;
    assert_eq!(
        first.subject.as_str(),
        own,
        "the reader saw a reply that was not its own"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reader_consumers_never_blocks_a_services_consumer() -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let nats = NatsServer::start().await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    let reader = async_nats::jetstream::new(default_reader(&nats).await?);
    let mirror = reader.get_stream("PAYTRACK_STATUS_READ").await?;
    // Ephemerals that stay alive for a minute each, far more than the cap allows.
    let mut made = 0;
    let mut refused = None;
    for _ in 0..2_000 {
        let created = mirror
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => made += 1,
            Err(error) => {
                refused = Some(error.to_string());
                break;
            }
        }
    }
    let refused = refused.context("2,000 reader consumers were all accepted")?;
    assert!(
        refused.contains("10026") || refused.contains("maximum consumers"),
        "{refused}"
    );
    assert!(made < 1_000, "{made} reader consumers before the cap");

    // The services still get theirs: the edge's ordered consumer on PAYTRACK_STATUS,
    // and a projector's durable.
    let edge = async_nats::jetstream::new(nats.connect_as(Role::Edge).await?);
    edge.get_stream("PAYTRACK_STATUS")
        .await?
        .create_consumer(OrderedConfig {
            filter_subject: "paytrack.status.>".into(),
            ..Default::default()
        })
        .await
        .context("the edge's consumer after the flood")?;
    let projector = async_nats::jetstream::new(nats.connect_as(Role::Projector).await?);
    paytrack_nats::ensure_consumer(
        &projector,
        "PAYTRACK_STATUS",
        paytrack_nats::durable_consumer(paytrack_nats::CONSUMER_PROJECTOR_STATUS, "paytrack.status.>"),
    )
    .await
    .context("the projector's durable after the flood")?;
    Ok(())
}

/// The all-tenant reader lives in an account of its own: an API answer sent to a reply
/// subject it names, and a push consumer's deliveries, stay there, so neither lands
/// in a services' stream (PAYTRACK_STATUS stores every `paytrack.status.…` subject).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_tenant_readers_replies_and_deliveries_never_reach_the_services_streams() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    let reconciler = async_nats::jetstream::new(nats.connect_as(Role::Reconciler).await?);
    reconciler
        .publish("paytrack.status.acme.m_1.pay_0", "t0".into())
        .await?
        .await?;
    let admin = async_nats::jetstream::new(nats.admin_client().await?);
    let stored = || async { anyhow::Ok(admin.get_stream("PAYTRACK_STATUS").await?.info().await?.state.messages) };
    let before = stored().await?;

    let mut reader = Probe::as_role(&nats, Role::Reader).await?;
    // An answer to a forged reply subject: once a later request on the same
    // connection is answered, the forged answer is stored or never will be.
    reader
        .client
        .publish_with_reply("$JS.API.INFO", "paytrack.status.acme.m_1.pay_reply", "".into())
        .await?;
    async_nats::jetstream::new(reader.client.clone())
        .query_account()
        .await?;
    assert_eq!(stored().await?, before, "an API answer was stored in PAYTRACK_STATUS");

    // A push consumer delivering into a transition subject the reader listens on:
    // delivered to the reader, stored nowhere.
    let forged = "paytrack.status.acme.m_1.pay_forged";
    let mut listening = reader.client.subscribe(forged).await?;
    reader.client.flush().await?;
    let mirror = "PAYTRACK_STATUS_READ";
    let push = serde_json::json!({"stream_name": mirror, "config": {
        "name": "push", "ack_policy": "none", "deliver_policy": "all", "deliver_subject": forged,
    }});
    if let Some(answer) = reader
        .request(&format!("$JS.API.CONSUMER.CREATE.{mirror}.push"), &push)
        .await?
        && answer.get("error").is_none()
    {
        let delivered = tokio::time::timeout(ANSWER, listening.next())
            .await
            .context("the push consumer never delivered to its listener")?
            .context("subscription ended")?;
        assert_eq!(&delivered.payload[..], b"t0");
        // A delivery stored in PAYTRACK_STATUS would be mirrored and delivered again.
        reconciler
            .publish("paytrack.status.acme.m_1.pay_1", "t1".into())
            .await?
            .await?;
        let next = tokio::time::timeout(ANSWER, listening.next())
            .await
            .context("the push consumer never delivered the next transition")?
            .context("subscription ended")?;
        assert_eq!(&next.payload[..], b"t1", "a delivery came back through the stream");
    }
    assert_eq!(
        stored().await?,
        before + 1,
        "a reader's delivery was stored in PAYTRACK_STATUS"
    );
    Ok(())
}
