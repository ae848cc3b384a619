//! A real nats-server with JetStream for one test, with paytrack's users and
//! permissions (`paytrack_nats::auth`, the same text as `k8s/nats-auth.conf`, plus the
//! readers of the tenants a test asks for), and the
//! layout step: [`NatsServer::lay_out`] applies the streams and buckets as the admin,
//! and the mirrors in each reader's account, as `paytrack layout` does, now and
//! after every restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use paytrack_nats::auth::TenantReader;
use paytrack_nats::{Credentials, Layout, Role};
use secrecy::{ExposeSecret, SecretString};

/// The nats-server version the project pins (see scripts/install-nats-server.sh).
pub const PINNED_VERSION: &str = "2.15.1";

/// How long a (re)started server may take to accept connections on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A nats-server process with its own port, store directory and user passwords.
/// Clients must authenticate: [`NatsServer::connect_as`] (or
/// [`NatsServer::credentials`] for a service's settings).
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    passwords: RolePasswords,
    /// Readers scoped to one tenant, rendered into the configuration beside the roles.
    tenant_readers: Vec<(TenantReader, SecretString)>,
    child: Option<Child>,
    /// The layout applied as the admin after every (re)start, once given.
    layout: std::sync::Mutex<Option<Layout>>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store.
    pub async fn start() -> anyhow::Result<NatsServer> {
        Self::start_with_tenant_readers(&[]).await
    }

    /// Starts a server on a free port with a fresh store whose users include a reader
    /// scoped to each of `tenants` (see [`NatsServer::tenant_reader_password`]).
    pub async fn start_with_tenant_readers(tenants: &[&str]) -> anyhow::Result<NatsServer> {
        let mut readers = Vec::new();
        for tenant in tenants {
            let tenant = paytrack_shared::TenantId::new(tenant).context("a tenant reader's tenant")?;
            readers.push((TenantReader::new(tenant)?, new_password()));
        }
        // The free port is released before nats-server binds it: if another process
        // took it meanwhile, the server exits and another port is tried.
        let mut last = None;
        for _ in 0..5 {
            let mut server = Self::stopped()?;
            server.tenant_readers = readers.clone();
            match server.restart().await {
                Ok(()) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    /// A server with its port, store and passwords chosen but not started yet
    /// ([`NatsServer::restart`] starts it): for tests of services that start first.
    pub fn stopped() -> anyhow::Result<NatsServer> {
        let passwords = RolePasswords::generate();
        Ok(NatsServer {
            // Outside the ephemeral range: the port stays unbound until the server
            // starts, possibly long after (services that start first).
            port: crate::free_port_for_later()?,
            store: tempfile::tempdir()?,
            passwords,
            tenant_readers: Vec::new(),
            child: None,
            layout: std::sync::Mutex::default(),
        })
    }

    /// The client URL (clients still need a user: see [`NatsServer::connect_as`]).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The password of `role`'s user on this server.
    pub fn password(&self, role: Role) -> SecretString {
        self.passwords.of(role)
    }

    /// The password of `tenant`'s reader on this server (empty when the server was
    /// started without one: the server then refuses it).
    pub fn tenant_reader_password(&self, tenant: &str) -> SecretString {
        self.tenant_readers
            .iter()
            .find(|(reader, _)| reader.tenant().as_str() == tenant)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| SecretString::from(String::new()))
    }

    /// `role`'s credentials, as a service's settings would give them.
    pub fn credentials(&self, role: Role) -> Credentials {
        Credentials {
            role,
            password: self.password(role),
        }
    }

    /// The settings pairs that give each service its user's password.
    pub fn settings_pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("nats_ingest_password", Role::Ingest),
            ("nats_reconciler_password", Role::Reconciler),
            ("nats_projector_password", Role::Projector),
            ("nats_edge_password", Role::Edge),
        ]
        .into_iter()
        .map(|(key, role)| (key, self.password(role).expose_secret().to_owned()))
        .collect()
    }

    /// A client connected as `role`'s user (with its inbox prefix), retrying the
    /// first connection so it may be made while the server is down.
    pub async fn connect_as(&self, role: Role) -> anyhow::Result<async_nats::Client> {
        let password = self.password(role);
        Ok(
            async_nats::ConnectOptions::with_user_and_password(role.user().into(), password.expose_secret().into())
                .custom_inbox_prefix(role.inbox_prefix())
                .retry_on_initial_connect()
                .connect(self.url())
                .await?,
        )
    }

    /// A client of the admin user, which may do anything: for assertions and for
    /// publishing what a test needs.
    pub async fn admin_client(&self) -> anyhow::Result<async_nats::Client> {
        self.connect_as(Role::Admin).await
    }

    /// The layout step: applies `layout` (every stream and bucket) as the admin now if
    /// the server runs, and after every restart. Services only verify the layout and
    /// wait for it meanwhile.
    pub async fn lay_out(&self, layout: Layout) -> anyhow::Result<()> {
        *self.layout.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(layout);
        if self.child.is_some() {
            self.apply_layout().await?;
        }
        Ok(())
    }

    /// [`NatsServer::lay_out`] with the layout `settings` ask for.
    pub async fn lay_out_for(&self, settings: &paytrack_shared::config::Settings) -> anyhow::Result<()> {
        self.lay_out(Layout::from_settings(settings)).await
    }

    async fn apply_layout(&self) -> anyhow::Result<()> {
        let layout = self
            .layout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(layout) = layout else {
            return Ok(());
        };
        let admin = self.admin_client().await?;
        paytrack_nats::apply_layout(&async_nats::jetstream::new(admin.clone()), &layout)
            .await
            .context("apply the layout as the admin")?;
        let readers: Vec<TenantReader> = self.tenant_readers.iter().map(|(r, _)| r.clone()).collect();
        paytrack_nats::apply_reader_layout(&admin, &layout, &readers)
            .await
            .context("lay out the readers' mirrors as the admin")?;
        Ok(())
    }

    /// The JetStream store directory (`-sd`): message blocks live under it, for tests
    /// that damage them while the server is stopped.
    pub fn store_dir(&self) -> PathBuf {
        self.store.path().join("js")
    }

    /// The server's log (permission violations are logged there).
    pub fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    /// Kills the server (as a crash would); its store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, store and passwords, and waits
    /// until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let conf = self.store.path().join("nats.conf");
        let readers: Vec<TenantReader> = self.tenant_readers.iter().map(|(r, _)| r.clone()).collect();
        std::fs::write(&conf, paytrack_nats::auth::render_conf_with(&readers))?;
        let mut command = Command::new(binary()?);
        command
            .arg("-c")
            .arg(&conf)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path().join("js"))
            .arg("-l")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.passwords.hand_to(&mut command);
        for (reader, password) in &self.tenant_readers {
            command.env(reader.password_env(), password.expose_secret());
        }
        // Ready is what this server's own log says, not that something answers on the
        // port (another process may hold it): count the readiness lines before starting.
        let log_path = self.log_path();
        let ready_lines = || {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .matches(READY_LINE)
                .count()
        };
        let before = ready_lines();
        let child = command.spawn().context("spawn nats-server")?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if ready_lines() > before && tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return self.apply_layout().await;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                bail!("nats-server exited with {status} on {addr}: {tail:?}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nats-server did not accept connections on {addr} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A fresh password: letters and digits, starting with a letter, as nats-server reads
/// a bare string.
/// One fresh random password per NATS role: what a test server or cluster renders
/// its users from and hands its clients.
#[derive(Debug, Clone)]
pub struct RolePasswords(Vec<(Role, SecretString)>);

impl RolePasswords {
    /// A new random password for every role.
    pub fn generate() -> RolePasswords {
        RolePasswords(Role::ALL.into_iter().map(|role| (role, new_password())).collect())
    }

    /// The password of `role`'s user (empty when there is none: the server then
    /// refuses it).
    pub fn of(&self, role: Role) -> SecretString {
        self.0
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| SecretString::from(String::new()))
    }

    /// Sets every role's password in the environment a nats-server's configuration
    /// reads them from.
    pub fn hand_to(&self, command: &mut Command) {
        for (role, password) in &self.0 {
            command.env(role.password_env(), password.expose_secret());
        }
    }
}

fn new_password() -> SecretString {
    SecretString::from(format!("p{}", uuid::Uuid::new_v4().simple()))
}

/// What nats-server logs once it accepts clients.
const READY_LINE: &str = "Server is ready";

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        // Refused publishes and subscriptions are worth seeing when a test fails.
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("Violation")) {
            eprintln!("nats-server: {line}");
        }
    }
}

/// Publishes `payload` on `subject` as `publisher` until `watched` (a subscription
/// made and flushed before) receives a message, within `within`; the first one it
/// receives. A core publish made before the server has propagated the
/// subscription's interest is dropped, so one publish alone proves nothing.
pub async fn publish_until_seen(
    publisher: &async_nats::Client,
    subject: &str,
    payload: &'static [u8],
    watched: &mut async_nats::Subscriber,
    within: Duration,
) -> anyhow::Result<async_nats::Message> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        publisher.publish(subject.to_owned(), payload.into()).await?;
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), watched.next()).await {
            return next.context("subscription ended");
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing published on {subject} arrived within {within:?}"
        );
    }
}
