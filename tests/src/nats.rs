//! A real nats-server with JetStream for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

/// The nats-server version the project pins (see scripts/install-nats-server.sh).
pub const PINNED_VERSION: &str = "2.15.1";

/// The pinned binary: `PAYTRACK_NATS_SERVER`, else `.dev/bin/nats-server`; its
/// version is checked once per process.
pub fn binary() -> anyhow::Result<PathBuf> {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let path = std::env::var_os("PAYTRACK_NATS_SERVER")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join(".dev/bin/nats-server"));
            let output = Command::new(&path).arg("--version").output().map_err(|e| {
                format!(
                    "cannot run {} ({e}); install it with scripts/install-nats-server.sh",
                    path.display()
                )
            })?;
            let version = String::from_utf8_lossy(&output.stdout).to_string();
            if !version.contains(&format!("v{PINNED_VERSION}")) {
                return Err(format!(
                    "{} is {version:?}, paytrack requires v{PINNED_VERSION}",
                    path.display()
                ));
            }
            Ok(path)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A nats-server process with its own port and store directory.
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store.
    pub async fn start() -> anyhow::Result<NatsServer> {
        let mut server = NatsServer {
            port: crate::free_port()?,
            store: tempfile::tempdir()?,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would); its store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let child = Command::new(binary()?)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn nats-server")?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("nats-server did not accept connections on {addr}")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
