//! The servers the fan-out figures compare, each in its own process so its resident
//! memory is its own: a ws-edge (this binary's hidden `edge` subcommand), a bare axum
//! WebSocket server with the same crates (`bare`), and nats-server's own WebSocket
//! listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server process, killed on drop.
pub struct ServerProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Its resident memory in bytes now (VmRSS of /proc/<pid>/status).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("server process has exited")?;
        rss_of(pid)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails when the process has ended.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("server process exited with {status}");
        }
        Ok(())
    }
}

/// VmRSS of a process in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// Set to a command (`heaptrack -o /tmp/edge`) to run the edge processes under it,
/// for a heap profile of their sessions.
const EDGE_WRAPPER: &str = "PAYTRACK_BENCH_EDGE_WRAPPER";

/// Starts this binary's hidden `subcommand` with `env`, and reads `listening <addr>`
/// from its stdout; the rest of its stdout (its log lines) goes to `log`, when given.
/// Closing its stdin (on drop) stops it.
pub async fn spawn_self(
    subcommand: &str,
    env: &[(String, String)],
    log: Option<PathBuf>,
) -> anyhow::Result<ServerProcess> {
    let exe = std::env::current_exe()?;
    let wrapper = std::env::var(EDGE_WRAPPER).ok().filter(|_| subcommand == "edge");
    let mut command = match wrapper.as_deref().map(str::split_whitespace) {
        Some(mut words) => {
            let mut command = Command::new(words.next().context("an empty edge wrapper")?);
            command.args(words).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command
        .arg(subcommand)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // The wrapper (a shell script) finds its tools on the PATH.
        .envs(wrapper.map(|_| ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().context("spawn bench server process")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut file = match log {
        Some(path) => Some(tokio::fs::File::create(path).await.context("create the server's log")?),
        None => None,
    };
    // Its log lines may come before `listening`: they go to the log too.
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = lines
                .next_line()
                .await?
                .context("server process ended before listening")?;
            if let Some(addr) = line.strip_prefix("listening ") {
                return Ok::<_, anyhow::Error>(addr.trim().parse()?);
            }
            write_line(file.as_mut(), &line).await;
        }
    })
    .await
    .context("server process did not report its address")??;
    // Keep draining stdout so the child never blocks on a full pipe, into its log file.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            write_line(file.as_mut(), &line).await;
        }
    });
    Ok(ServerProcess {
        addr,
        child,
        _dir: None,
    })
}

/// Appends `line` to `file`, when there is one (a lost log line is not a bench failure).
async fn write_line(file: Option<&mut tokio::fs::File>, line: &str) {
    use tokio::io::AsyncWriteExt;
    if let Some(file) = file {
        let _ = file.write_all(line.as_bytes()).await;
        let _ = file.write_all(b"\n").await;
    }
}

/// A nats-server whose WebSocket listener serves clients (no TLS, no auth), and its
/// core client port for the publisher.
pub async fn spawn_nats_ws(binary: PathBuf) -> anyhow::Result<(ServerProcess, String)> {
    let dir = tempfile::tempdir()?;
    let core = paytrack_tests::free_port()?;
    let ws = paytrack_tests::free_port()?;
    let conf = dir.path().join("ws.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{core}\nmax_connections: 200000\nwebsocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n  compression: false\n}}\n"
        ),
    )?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn nats-server (websocket)")?;
    let addr: SocketAddr = format!("127.0.0.1:{ws}").parse()?;
    paytrack_tests::eventually(Duration::from_secs(30), "nats-server websocket listener", || async {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await?;
    Ok((
        ServerProcess {
            addr,
            child,
            _dir: Some(dir),
        },
        format!("nats://127.0.0.1:{core}"),
    ))
}

/// Waits until `GET http://addr/readyz` answers 200.
pub async fn wait_ready(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<()> {
    let url = format!("http://{addr}/readyz");
    paytrack_tests::eventually(Duration::from_secs(60), "edge ready", || async {
        let status = http.get(&url).send().await.ok()?.status();
        (status == 200).then_some(())
    })
    .await
}

/// Stops the process when the parent closes our stdin (or dies).
fn cancel_on_stdin_eof(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        use tokio::io::AsyncReadExt;
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        token.cancel();
    });
}

/// The hidden `edge` subcommand: a ws-edge from `PAYTRACK_*` variables.
pub async fn edge_main() -> anyhow::Result<()> {
    let settings = paytrack_shared::config::Settings::from_env()?;
    // Logs as a deployed edge writes them: its default level, its configured format.
    paytrack_shared::telemetry::init_service("ws-edge", &settings)?;
    let config = paytrack_ws_edge::Config::from_settings(&settings)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let edge = paytrack_ws_edge::WsEdge::bind(config).await?;
    println!("listening {}", edge.local_addr()?);
    cancel_on_stdin_eof(shutdown.clone());
    edge.run(shutdown).await?;
    Ok(())
}

/// The hidden `bare` subcommand: see [`crate::bare`].
pub async fn bare_main() -> anyhow::Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    cancel_on_stdin_eof(shutdown.clone());
    crate::bare::serve(listener, shutdown).await
}
