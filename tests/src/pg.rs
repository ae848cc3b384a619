//! A real PostgreSQL cluster for the test process, and a fresh database per test.
//!
//! The cluster lives in a temporary directory under /tmp (the PostgreSQL user must be
//! able to reach it, which a clone under a private directory may not allow). It runs
//! under a small shell supervisor that reads our stdin: when this process exits, for
//! whatever reason, the pipe closes and the supervisor stops PostgreSQL and removes
//! its data, so no server outlives the tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

/// Set by [`durable`]: the cluster runs with PostgreSQL's own durability settings.
static DURABLE: AtomicBool = AtomicBool::new(false);
/// The process's cluster, started on first use.
static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// Makes the process's cluster durable as `make up` runs PostgreSQL (`fsync`,
/// `synchronous_commit` and `full_page_writes` on, the server's defaults) instead of
/// the tests' fast settings. Measurements call it before the first database is made;
/// it fails once the cluster has started, since the settings would not apply.
pub fn durable() -> anyhow::Result<()> {
    if CLUSTER.get().is_some() {
        bail!("the PostgreSQL cluster has already started with the tests' settings");
    }
    DURABLE.store(true, Ordering::SeqCst);
    Ok(())
}

/// The server's `-c` options: the tests' fast settings unless [`durable`] was asked
/// for, the connection limit, and the profiling options.
fn server_options() -> String {
    let speed = if DURABLE.load(Ordering::SeqCst) {
        ""
    } else {
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    };
    format!("{speed} -c max_connections=300{}", profiling_options())
}

struct Cluster {
    port: u16,
    dir: String,
    _supervisor: Mutex<Child>,
    /// A server started again by [`start`] after [`stop`], under its own supervisor.
    restarted: Mutex<Option<Child>>,
}

/// The directory of the PostgreSQL 15 programs: `PAYTRACK_PG_BIN`, else where
/// Debian installs them.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("PAYTRACK_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The path of one PostgreSQL program (`initdb`, `pg_ctl`, `postgres`).
pub fn pg_tool(name: &str) -> anyhow::Result<String> {
    pg_bin()
        .join(name)
        .to_str()
        .map(str::to_owned)
        .context("the PostgreSQL bin path is not UTF-8")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `program args` as the postgres user when we are root (PostgreSQL refuses to
/// run as root).
pub fn as_postgres(program: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]).args(args);
        // The postgres user may not be allowed into the caller's directory.
        command.current_dir("/");
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

/// Whether `initdb` syncs the new cluster's files to disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitSync {
    /// Skip it (`--no-sync`): the cluster is thrown away with the test process.
    Skip,
    /// Sync, as a production cluster is created.
    Sync,
}

/// Creates a directory under /tmp named `prefix…`, owned by the postgres user, and a
/// new cluster in its `data` directory (trust authentication, superuser `postgres`,
/// UTF-8). Returns the directory; the caller starts, stops and removes it.
pub fn init_cluster(prefix: &str, sync: InitSync) -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?.keep();
    let dir_str = dir.to_str().context("temp path is not UTF-8")?;
    if is_root() {
        let status = Command::new("chown").args(["postgres:postgres", dir_str]).status()?;
        if !status.success() {
            bail!("cannot chown {dir_str} to postgres");
        }
    }
    let data = format!("{dir_str}/data");
    let mut args = vec!["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8"];
    if sync == InitSync::Skip {
        args.push("--no-sync");
    }
    let output = as_postgres(&pg_tool("initdb")?, &args)
        .output()
        .context("run initdb (is PostgreSQL 15 installed? scripts/ensure-postgres.sh)")?;
    if !output.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(dir)
}

fn start_cluster() -> anyhow::Result<Cluster> {
    let dir = init_cluster("paytrack-test-pg-", InitSync::Skip)?;
    let dir_str = dir.to_str().context("temp path is not UTF-8")?.to_owned();
    let data = format!("{dir_str}/data");
    let port = crate::free_port_for_later()?;
    let postgres = pg_bin().join("postgres");
    let script = format!(
        "{postgres} -D {data} -p {port} -k {dir_str} -c listen_addresses=127.0.0.1{extra} \
         >{dir_str}/log 2>&1 & \
         pid=$!; read _eof; kill -INT $pid; wait $pid; rm -rf {dir_str}",
        postgres = postgres.display(),
        extra = server_options(),
    );
    let mut supervisor = as_postgres("sh", &["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    // Keep the pipe open for the life of the process; never write to it.
    if let Some(stdin) = supervisor.stdin.as_mut() {
        let _ = stdin.flush();
    }
    Ok(Cluster {
        port,
        dir: dir_str,
        _supervisor: Mutex::new(supervisor),
        restarted: Mutex::new(None),
    })
}

/// With `PAYTRACK_PG_STATEMENTS=1`, the server loads `pg_stat_statements`, so a
/// measurement can say which statements the time went to ([`top_statements`]).
fn profiling_options() -> &'static str {
    if std::env::var_os("PAYTRACK_PG_STATEMENTS").is_some_and(|v| v == "1") {
        " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    } else {
        ""
    }
}

/// Forgets the statement counts so far (when profiling, [`top_statements`]), so a
/// measurement's profile holds only its own statements.
pub async fn reset_statements(db: &sqlx::PgPool) {
    if sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(db)
        .await
        .is_ok()
    {
        let _ = sqlx::query("SELECT pg_stat_statements_reset()").execute(db).await;
    }
}

/// The `limit` statements that took the most time in `db`'s server, as lines of
/// total milliseconds, calls, rows and the statement's start, when the server was
/// started with `PAYTRACK_PG_STATEMENTS=1`; empty otherwise.
pub async fn top_statements(db: &sqlx::PgPool, limit: i64) -> Vec<String> {
    if sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(db)
        .await
        .is_err()
    {
        return Vec::new();
    }
    let rows: Vec<(f64, i64, i64, String)> = sqlx::query_as(
        "SELECT total_exec_time, calls, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
         FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
    .unwrap_or_default();
    rows.into_iter()
        .map(|(ms, calls, n, q)| format!("{ms:>9.0} ms {calls:>7} calls {n:>8} rows  {q}"))
        .collect()
}

fn cluster() -> anyhow::Result<&'static Cluster> {
    CLUSTER
        .get_or_init(|| start_cluster().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("PostgreSQL for tests: {e}"))
}

/// Creates a fresh, empty database and returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    let cluster = cluster()?;
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut connection = None;
    for _ in 0..200 {
        match PgConnection::connect(&admin).await {
            Ok(c) => {
                connection = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut connection = connection.context("PostgreSQL did not accept connections")?;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port))
}

/// Stops the test process's PostgreSQL (fast shutdown: connections are cut), as an
/// outage would; [`start`] brings it back on the same port and data. Every database
/// of the process is affected, so a test using this runs in its own test binary.
pub fn stop() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let pg_ctl = pg_bin().join("pg_ctl");
    let data = format!("{}/data", cluster.dir);
    let output = as_postgres(
        pg_ctl.to_str().context("pg bin path")?,
        &["-D", &data, "-m", "fast", "-w", "stop"],
    )
    .output()?;
    if !output.status.success() {
        bail!("pg_ctl stop failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    // A server restarted earlier has stopped now; forget its supervisor.
    if let Ok(mut restarted) = cluster.restarted.lock()
        && let Some(mut child) = restarted.take()
    {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    Ok(())
}

/// Starts PostgreSQL again after [`stop`], under a supervisor that stops it when this
/// process exits (as the first one does).
pub fn start() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let dir = &cluster.dir;
    let postgres = pg_bin().join("postgres");
    let script = format!(
        "{postgres} -D {dir}/data -p {port} -k {dir} -c listen_addresses=127.0.0.1{extra} \
         >>{dir}/log 2>&1 & \
         pid=$!; read _eof; kill -INT $pid; wait $pid",
        postgres = postgres.display(),
        port = cluster.port,
        extra = server_options(),
    );
    let child = as_postgres("sh", &["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    *cluster
        .restarted
        .lock()
        .map_err(|_| anyhow::anyhow!("restarted lock"))? = Some(child);
    Ok(())
}
