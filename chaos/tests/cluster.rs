//! The three-node cluster of the chaos harness: the layout at R3 is what the
//! cluster holds, services' verification accepts it and refuses R1, a node cut off
//! by the fault proxy catches up once the partition heals, and a node left behind
//! cannot give the reconciler's read-before-append a stale base.

use std::time::Duration;

use async_nats::jetstream;
use paytrack_chaos::cluster::{Cluster, SyncPolicy};
use paytrack_nats::{Layout, LayoutError, Role};

fn layout(replicas: usize) -> anyhow::Result<Layout> {
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_replicas", replicas.to_string())])?;
    Ok(Layout::from_settings(&settings))
}

/// Creates `config` with three replicas, retried while the cluster settles: right
/// after a start the meta leader may not know every peer yet ("no suitable peers
/// for placement").
async fn create_r3_stream(js: &jetstream::Context, config: jetstream::stream::Config) -> anyhow::Result<()> {
    paytrack_tests::eventually(Duration::from_secs(60), "an R3 stream placed", || {
        let js = js.clone();
        let config = jetstream::stream::Config {
            num_replicas: 3,
            ..config.clone()
        };
        async move { js.create_stream(config).await.ok().map(drop) }
    })
    .await
}

/// Whether both of `stream`'s followers are current, online and without lag, as
/// the node `js` talks to reports them.
async fn followers_caught_up(js: &jetstream::Context, stream: &str) -> Option<()> {
    let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
    let replicas = info.cluster?.replicas;
    (replicas.len() == 2
        && replicas
            .iter()
            .all(|r| r.current && !r.offline && r.lag.unwrap_or(0) == 0))
    .then_some(())
}

/// The sequence of CHAIN's last `chain.p` message as a direct get through `client`'s
/// node answers it (any replica may answer a direct get).
async fn direct_last_sequence(client: &async_nats::Client) -> Option<u64> {
    let reply = client
        .request("$JS.API.DIRECT.GET.CHAIN", r#"{"last_by_subj":"chain.p"}"#.into())
        .await
        .ok()?;
    reply
        .headers
        .as_ref()?
        .get("Nats-Sequence")?
        .as_str()
        .parse::<u64>()
        .ok()
}

/// `PAYTRACK_NATS_REPLICAS=3` lays every stream and bucket out with three replicas
/// on three distinct nodes, and a service expecting R3 accepts it.
#[tokio::test(flavor = "multi_thread")]
async fn a_layout_at_three_replicas_is_what_the_cluster_holds() -> anyhow::Result<()> {
    let cluster = Cluster::start(SyncPolicy::Always).await?;
    let r3 = layout(3)?;
    cluster.lay_out(&r3).await?;
    let js = jetstream::new(cluster.connect_as(Role::Admin).await?);
    let streams = paytrack_nats::layout_streams(&r3);
    assert!(streams.len() >= 13, "every stream and bucket: {}", streams.len());
    for expected in streams {
        let info = js.get_stream(&expected.name).await?.info().await?.clone();
        assert_eq!(info.config.num_replicas, 3, "{}", expected.name);
        let cluster_info = info.cluster.clone().unwrap_or_default();
        let mut nodes: Vec<String> = cluster_info.replicas.iter().map(|r| r.name.clone()).collect();
        nodes.extend(cluster_info.leader.clone());
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 3, "{} on three nodes: {nodes:?}", expected.name);
    }
    paytrack_nats::verify_layout(&js, &r3).await?;
    // A service configured for one replica refuses nothing here, but one configured
    // for three refuses a cluster laid out at one: fewer replicas is a wrong layout.
    let refused = paytrack_nats::verify_layout(&js, &layout(1)?).await;
    assert!(matches!(refused, Err(LayoutError::Wrong { .. })), "{refused:?}");
    Ok(())
}

/// A node isolated by cutting its links misses writes, and has them all once the
/// partition heals (the stream's replicas report no lag).
#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_by_the_proxy_catches_up_after_the_heal() -> anyhow::Result<()> {
    let cluster = Cluster::start(SyncPolicy::Always).await?;
    let js = jetstream::new(cluster.connect_as(Role::Admin).await?);
    create_r3_stream(
        &js,
        jetstream::stream::Config {
            name: "PARTITION".to_owned(),
            subjects: vec!["partition.>".to_owned()],
            ..Default::default()
        },
    )
    .await?;
    let leader = cluster.stream_leader("PARTITION").await?;
    let isolated = (leader + 1) % 3;
    // Ask the leader: a client on the node being cut off would see only that node.
    let js = jetstream::new(cluster.connect_to(Role::Admin, leader).await?);
    cluster.isolate(isolated, true);
    let isolated_name = cluster.name(isolated).to_owned();
    // The isolated node is seen as gone (offline or lagging) while cut off.
    paytrack_tests::eventually(Duration::from_secs(60), "the isolated node seen as away", || {
        let js = js.clone();
        let name = isolated_name.clone();
        async move {
            js.publish("partition.a", "during".into()).await.ok()?.await.ok()?;
            let info = js.get_stream("PARTITION").await.ok()?.info().await.ok()?.clone();
            let replica = info.cluster?.replicas.into_iter().find(|r| r.name == name)?;
            (!replica.current || replica.offline).then_some(())
        }
    })
    .await?;
    cluster.isolate(isolated, false);
    paytrack_tests::eventually(Duration::from_secs(90), "every replica current again", || {
        followers_caught_up(&js, "PARTITION")
    })
    .await?;
    Ok(())
}

/// The reconciler reads a payment's newest transition before appending the next
/// one with `Nats-Expected-Last-Subject-Sequence`. A replica cut off from the
/// stream's leader still answers direct gets from its own, older copy; the read the
/// reconciler makes (`paytrack_nats::last_message`, a `STREAM.MSG.GET` only the
/// leader answers) never hands out that older copy, and an append based on it is
/// refused by the leader all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_replica_never_gives_the_reconcilers_read_a_stale_base() -> anyhow::Result<()> {
    use async_nats::jetstream::context::PublishErrorKind;
    use async_nats::jetstream::message::PublishMessage;

    let cluster = Cluster::start(SyncPolicy::Always).await?;
    let js = jetstream::new(cluster.connect_as(Role::Admin).await?);
    create_r3_stream(
        &js,
        jetstream::stream::Config {
            name: "CHAIN".to_owned(),
            subjects: vec!["chain.>".to_owned()],
            allow_direct: true,
            ..Default::default()
        },
    )
    .await?;
    let leader = cluster.stream_leader("CHAIN").await?;
    let lagging = (leader + 1) % 3;
    let at_leader = jetstream::new(cluster.connect_to(Role::Admin, leader).await?);
    let lagging_client = cluster.connect_to(Role::Admin, lagging).await?;
    let at_lagging = jetstream::new(lagging_client.clone());
    let append = |expected: u64, body: &'static str| {
        let js = at_leader.clone();
        async move {
            let message = PublishMessage::build()
                .expected_last_subject_sequence(expected)
                .payload(body.into());
            js.send_publish("chain.p", message).await?.await
        }
    };
    let first = append(0, "v1").await?.sequence;
    // Every replica holds v1 before the cut.
    paytrack_tests::eventually(Duration::from_secs(60), "v1 on every replica", || {
        followers_caught_up(&at_leader, "CHAIN")
    })
    .await?;
    // Replicas answer direct gets once they are set up to.
    paytrack_tests::eventually(Duration::from_secs(60), "direct gets answered", || {
        direct_last_sequence(&lagging_client)
    })
    .await?;
    // The handle the reconciler would hold, taken while the node is still joined.
    let status = at_lagging.get_stream("CHAIN").await?;
    cluster.isolate(lagging, true);
    let second = paytrack_tests::eventually(Duration::from_secs(60), "v2 appended without the cut node", || {
        let append = &append;
        async move { append(first, "v2").await.ok().map(|ack| ack.sequence) }
    })
    .await?;

    // The hazard exists: the cut-off replica answers a direct get with v1.
    // Once it has set up its own responder (its peers' answers are out of reach).
    let stale = paytrack_tests::eventually(Duration::from_secs(60), "the cut-off replica's answer", || {
        direct_last_sequence(&lagging_client)
    })
    .await?;
    assert_eq!(stale, first, "the cut-off replica answers from its own copy");

    // The reconciler's read through the same node never returns that copy: the
    // leader is out of its reach, so it fails rather than answer v1.
    let read = paytrack_nats::last_message(&status, "chain.p").await;
    assert!(
        !matches!(&read, Ok(Some(m)) if m.sequence == first),
        "the read before an append answered from a lagging replica: {:?}",
        read.map(|m| m.map(|m| m.sequence))
    );

    // An append based on the old copy is refused by the leader.
    let refused = append(first, "v2-fork").await;
    assert!(
        matches!(&refused, Err(e) if e.kind() == PublishErrorKind::WrongLastSequence),
        "an append expecting v1 after v2: {refused:?}"
    );

    cluster.isolate(lagging, false);
    let healed = paytrack_tests::eventually(Duration::from_secs(90), "the read through the healed node", || {
        let status = status.clone();
        async move { paytrack_nats::last_message(&status, "chain.p").await.ok().flatten() }
    })
    .await?;
    assert_eq!(healed.sequence, second, "the leader's newest, through the healed node");
    Ok(())
}
