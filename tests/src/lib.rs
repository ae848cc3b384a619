//! The test harness: real nats-server (JetStream) and real PostgreSQL, started by the
//! tests themselves on free ports with temporary data, and the whole mesh in-process.
//!
//! - [`NatsServer`]: one per test (cheap), stoppable and restartable on the same port
//!   and store, killed on drop.
//! - [`postgres`]: one cluster per test process, a fresh database per test.
//! - [`Mesh`]: ingest, reconciler, ledger-projector and ws-edge on top of both, with
//!   helpers to sign webhooks, mint tokens and open WebSockets.

pub mod continuity;
pub mod facts;
pub mod ground_truth;
pub mod hostile;
pub mod mesh;
pub mod nats;
pub mod otlp;
pub mod pg;
pub mod probe;
pub mod prom;
pub mod sse;
pub mod standalone;
pub mod workload;
pub mod ws;

pub use mesh::Mesh;
pub use nats::NatsServer;

/// The workspace root, for finding `.dev/bin` and `k8s/`.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A free TCP port on 127.0.0.1 below the kernel's ephemeral range (32768 and up), for
/// a server that binds it later (a NATS server started after the services that use
/// it): no outgoing connection's source port, and no other test's [`free_port`], can
/// take it in between.
pub fn free_port_for_later() -> anyhow::Result<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port: u16 = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port between 20000 and 32000")
}

/// Waits until `f` returns Some, polling every 50 ms, up to `timeout`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = f().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
