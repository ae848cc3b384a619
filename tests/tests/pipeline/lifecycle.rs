//! Every service has one lifecycle: `bind(config)` binds its listener, `local_addr()`
//! says where, `run(shutdown)` serves until the token is cancelled. For the consumer
//! services (reconciler, projector) the listener is the admin one (`/readyz`,
//! `/metrics`), which answers before NATS or PostgreSQL are reachable; the edge's
//! `/readyz` is on its one listener, and the simulator answers `/healthz`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use paytrack_shared::config::Settings;
use tokio_util::sync::CancellationToken;

/// Settings whose NATS and PostgreSQL are unreachable: the services must bind and
/// stop anyway.
fn unreachable_backends() -> anyhow::Result<Settings> {
    Ok(Settings::from_pairs([
        ("nats_url", "nats://127.0.0.1:9".to_owned()),
        ("database_url", "postgres://paytrack@127.0.0.1:9/paytrack".to_owned()),
        ("admin_listen", "127.0.0.1:0".to_owned()),
    ])?)
}

/// Waits until `/readyz` at `addr` answers `status`.
async fn readyz_answers(addr: SocketAddr, status: u16) -> anyhow::Result<()> {
    answers(addr, "/readyz", status).await
}

/// Waits until `path` at `addr` answers `status`.
async fn answers(addr: SocketAddr, path: &str, status: u16) -> anyhow::Result<()> {
    let url = format!("http://{addr}{path}");
    paytrack_tests::eventually(Duration::from_secs(60), "the listener's answer", || async {
        let response = reqwest::get(&url).await.ok()?;
        (response.status().as_u16() == status).then_some(())
    })
    .await
}

/// Checks a bound service: its admin address is real, `/readyz` answers 503 (its
/// backends are unreachable), and cancelling the token given to `run` stops it.
async fn serves_admin_then_stops<E, Fut>(
    addr: std::io::Result<Option<SocketAddr>>,
    run: impl FnOnce(CancellationToken) -> Fut,
) -> anyhow::Result<()>
where
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let addr = addr?.context("an admin listener is configured")?;
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(shutdown.clone()));
    readyz_answers(addr, 503).await?;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), running).await???;
    Ok(())
}

#[tokio::test]
async fn the_reconciler_binds_reports_its_address_and_stops_on_shutdown() -> anyhow::Result<()> {
    let config = paytrack_reconciler::Config::from_settings(&unreachable_backends()?);
    let service = paytrack_reconciler::ReconcilerService::bind(config).await?;
    serves_admin_then_stops(service.local_addr(), |shutdown| service.run(shutdown)).await
}

#[tokio::test]
async fn the_projector_binds_reports_its_address_and_stops_on_shutdown() -> anyhow::Result<()> {
    let config = paytrack_ledger_projector::Config::from_settings(&unreachable_backends()?);
    let service = paytrack_ledger_projector::LedgerProjector::bind(config).await?;
    serves_admin_then_stops(service.local_addr(), |shutdown| service.run(shutdown)).await
}

#[tokio::test]
async fn the_edge_binds_reports_its_address_and_stops_on_shutdown() -> anyhow::Result<()> {
    let settings = Settings::from_pairs([
        ("nats_url", "nats://127.0.0.1:9".to_owned()),
        ("edge_listen", "127.0.0.1:0".to_owned()),
        ("jwt_secret", "test-secret".to_owned()),
    ])?;
    let config = paytrack_ws_edge::Config::from_settings(&settings)?;
    let service = paytrack_ws_edge::WsEdge::bind(config).await?;
    serves_admin_then_stops(service.local_addr().map(Some), |shutdown| service.run(shutdown)).await
}

#[tokio::test]
async fn the_simulator_binds_reports_its_address_and_stops_on_shutdown() -> anyhow::Result<()> {
    let settings = Settings::from_pairs([
        ("simulator_listen", "127.0.0.1:0".to_owned()),
        ("simulator_ingest_url", "http://127.0.0.1:9".to_owned()),
        ("simulator_tenant", "acme".to_owned()),
        ("simulator_token", "test-token".to_owned()),
    ])?;
    let config = paytrack_simulator::Config::from_settings(&settings)?;
    let service = paytrack_simulator::Simulator::bind(config).await?;
    let addr = service.local_addr()?;
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run(shutdown.clone()));
    answers(addr, "/healthz", 200).await?;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running).await???;
    Ok(())
}
