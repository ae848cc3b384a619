//! A stopping edge drains: it stops accepting, tells every WebSocket client to
//! reconnect elsewhere (close code 1012) and waits for them to leave, at most its
//! drain timeout, before it exits. This is what the Kubernetes preStop wait and grace
//! period (k8s/ws-edge.yaml) are sized around.

use std::time::Duration;

use paytrack_tests::Mesh;
use paytrack_tests::ws::{Upgrade, WsClient};

/// Generous bound for anything the edge does on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// How long the test watches the edge keep running for a client that has not left.
/// A negative observation: a slow machine can only make it pass more easily.
const WATCH: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_edge_tells_clients_to_move_and_waits_until_they_have_left() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let edge = mesh
        .start_edge_with("edge-draining", |config| {
            config.drain_timeout = Duration::from_secs(600)
        })
        .await?;
    let token = mesh.operator_token();
    let mut prompt = WsClient::connect(&edge.ws_url(), &token).await?;
    prompt.next_of("welcome", WAIT).await?;
    // Connected, but reads nothing until the test says so: it has not seen its 1012.
    let mut slow = WsClient::connect(&edge.ws_url(), &token).await?;

    edge.signal_stop();
    assert_eq!(prompt.closed(WAIT).await?, 1012, "told to reconnect elsewhere");
    prompt.leave(WAIT).await?;

    // It no longer accepts new clients.
    let refused = match WsClient::try_connect(&edge.ws_url(), Some(&token)).await {
        Ok(Upgrade::Open(_)) => false,
        Ok(Upgrade::Refused(_)) | Err(_) => true,
    };
    assert!(refused, "a draining edge must not take new sessions");

    // The slow client still holds its socket: the edge waits for it.
    let watched_until = tokio::time::Instant::now() + WATCH;
    while tokio::time::Instant::now() < watched_until {
        assert!(edge.is_running(), "the edge exited under a client that has not left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(slow.closed(WAIT).await?, 1012, "the slow client is told too");
    slow.leave(WAIT).await?;
    paytrack_tests::eventually(WAIT, "the edge stopped once its clients left", || async {
        (!edge.is_running()).then_some(())
    })
    .await?;
    edge.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_gives_up_on_a_client_that_never_leaves() -> anyhow::Result<()> {
    let mesh = Mesh::start().await?;
    let edge = mesh
        .start_edge_with("edge-bounded", |config| config.drain_timeout = Duration::from_secs(2))
        .await?;
    // Never reads: never answers the close.
    let mut silent = WsClient::connect(&edge.ws_url(), &mesh.operator_token()).await?;

    edge.signal_stop();
    paytrack_tests::eventually(WAIT, "the edge stopped at its drain timeout", || async {
        (!edge.is_running()).then_some(())
    })
    .await?;
    edge.stop().await?;
    // What it was sent before the edge gave up: 1012, then the hang-up.
    assert_eq!(silent.closed(WAIT).await?, 1012);
    silent.leave(WAIT).await?;
    Ok(())
}
