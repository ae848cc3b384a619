//! Each paytrack service as its own OS process, as a Kubernetes pod runs it: the
//! service binaries built next to this one, configured by environment, logging to a
//! file per replica, and killed or paused by signal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A paytrack service (the simulator, which stands for the providers, included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// HTTP in: commands and webhooks.
    Ingest,
    /// The status state machine.
    Reconciler,
    /// The PostgreSQL record.
    Projector,
    /// Live sessions.
    Edge,
    /// The providers' sandbox gateways.
    Simulator,
}

impl Kind {
    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Ingest => "paytrack-ingest",
            Kind::Reconciler => "paytrack-reconciler",
            Kind::Projector => "paytrack-ledger-projector",
            Kind::Edge => "paytrack-ws-edge",
            Kind::Simulator => "paytrack-simulator",
        }
    }

    /// The short name the fault table uses.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ingest => "ingest",
            Kind::Reconciler => "reconciler",
            Kind::Projector => "ledger-projector",
            Kind::Edge => "ws-edge",
            Kind::Simulator => "simulator",
        }
    }

    /// The four services that run with two replicas each.
    pub const REPLICATED: [Kind; 4] = [Kind::Ingest, Kind::Reconciler, Kind::Projector, Kind::Edge];
}

/// Where the service binaries are: `PAYTRACK_CHAOS_BIN_DIR`, else this executable's
/// own directory (a test binary's `deps/` parent).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PAYTRACK_CHAOS_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable without a directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// One running (or stopped) replica of a service.
pub struct Replica {
    /// Its service.
    pub kind: Kind,
    /// 1 or 2.
    pub index: usize,
    /// Its HTTP address (the public one of ingest and ws-edge, the health listener of
    /// the others).
    pub addr: SocketAddr,
    env: BTreeMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// A replica of `kind` with its environment; [`Replica::start`] runs it.
    pub fn new(kind: Kind, index: usize, addr: SocketAddr, env: BTreeMap<String, String>, logs: &Path) -> Replica {
        Replica {
            kind,
            index,
            addr,
            env,
            log: logs.join(format!("{}-{index}.log", kind.label())),
            child: None,
        }
    }

    /// The replica's name in reports: `reconciler-2`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.kind.label(), self.index)
    }

    /// Starts the process (its log is appended to).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let binary = bin_dir()?.join(self.kind.binary());
        if !binary.exists() {
            bail!(
                "{} is missing: build the service binaries first (cargo build --bins)",
                binary.display()
            );
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("PAYTRACK_CHAOS_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("not running")?.id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Waits until the replica answers `GET /readyz` with 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.addr);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if !self.is_running() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                bail!("{} exited during start: {tail:#?}", self.name());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} not ready within {timeout:?} ({})", self.name(), self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
