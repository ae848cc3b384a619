//! Three nats-server nodes in one JetStream cluster on loopback, the shape k8s/
//! deploys, with every route between two nodes through its own fault [`Link`].
//!
//! Each node has its own client, cluster and monitoring port and its own file store.
//! Node `i` solicits a route to node `j` through link `(i, j)`; each node advertises
//! a closed port as its cluster address, so no node learns another's real address by
//! gossip and bypasses the links. Passwords are fresh per cluster and reach the
//! servers by their environment, as `nats/auth.conf` expects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use paytrack_nats::{Layout, Role};
use paytrack_tests::nats::RolePasswords;
use secrecy::{ExposeSecret, SecretString};

use crate::proxy::{Link, Mode};

/// How many nodes the cluster has (the k8s StatefulSet's size).
pub const NODES: usize = 3;

/// When a node writes its stream data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// nats-server's default: an fsync every two minutes; writes acknowledged in
    /// between live only in the page cache.
    Default,
    /// `sync_interval: always`: every write is fsynced before it is acknowledged.
    Always,
}

impl SyncPolicy {
    /// The name the fault table and the docs use.
    pub fn label(self) -> &'static str {
        match self {
            SyncPolicy::Default => "default (fsync every 2 min)",
            SyncPolicy::Always => "sync_interval: always",
        }
    }
}

/// nats-server's default sync interval, the window a power loss can take away.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(120);

struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// The running cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    links: HashMap<(usize, usize), Link>,
    passwords: RolePasswords,
    sync: SyncPolicy,
    /// Each store file as the last modelled fsync left it (see [`Cluster::mark_synced`]).
    synced: HashMap<PathBuf, Synced>,
}

impl Cluster {
    /// Starts three nodes with `sync`, waits until JetStream has a meta leader.
    pub async fn start(sync: SyncPolicy) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("paytrack-chaos-nats-").tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let store = dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&store)?;
            nodes.push(Node {
                name: format!("n{}", i + 1),
                client_port: paytrack_tests::free_port_for_later()?,
                cluster_port: paytrack_tests::free_port_for_later()?,
                monitor_port: paytrack_tests::free_port_for_later()?,
                store,
                child: None,
            });
        }
        let mut links = HashMap::new();
        for (i, _) in nodes.iter().enumerate() {
            for (j, to) in nodes.iter().enumerate() {
                if i != j {
                    let target: SocketAddr = ([127, 0, 0, 1], to.cluster_port).into();
                    links.insert((i, j), Link::start(vec![target]).await?);
                }
            }
        }
        let passwords = RolePasswords::generate();
        let mut cluster = Cluster {
            dir,
            nodes,
            links,
            passwords,
            sync,
            synced: HashMap::new(),
        };
        for i in 0..NODES {
            cluster.spawn(i)?;
        }
        for i in 0..NODES {
            cluster.wait_ready(i).await?;
        }
        cluster.wait_meta_leader(Duration::from_secs(90)).await?;
        Ok(cluster)
    }

    /// The sync policy the nodes run with.
    pub fn sync(&self) -> SyncPolicy {
        self.sync
    }

    /// Every node's client URL, comma-separated, as a service's `nats_url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The password of `role`'s user.
    pub fn password(&self, role: Role) -> SecretString {
        self.passwords.of(role)
    }

    /// A client of `role`'s user connected to any node (it follows the cluster).
    pub async fn connect_as(&self, role: Role) -> anyhow::Result<async_nats::Client> {
        self.connect_with(role, &self.urls()).await
    }

    /// A client of `role`'s user connected to node `i` only: what it sees is that
    /// node's view (a test that cuts another node off must not ask the cut-off one).
    pub async fn connect_to(&self, role: Role, i: usize) -> anyhow::Result<async_nats::Client> {
        let node = self.nodes.get(i).context("no such node")?;
        self.connect_with(role, &format!("nats://127.0.0.1:{}", node.client_port))
            .await
    }

    async fn connect_with(&self, role: Role, urls: &str) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse()).collect::<Result<_, _>>()?;
        Ok(async_nats::ConnectOptions::with_user_and_password(
            role.user().into(),
            self.password(role).expose_secret().into(),
        )
        .custom_inbox_prefix(role.inbox_prefix())
        .retry_on_initial_connect()
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(urls)
        .await?)
    }

    /// The layout step as the admin, retried while the cluster settles (a meta leader
    /// may still be elected right after a start).
    pub async fn lay_out(&self, layout: &Layout) -> anyhow::Result<()> {
        let admin = self.connect_as(Role::Admin).await?;
        let js = async_nats::jetstream::new(admin);
        let mut last = None;
        for _ in 0..30 {
            match paytrack_nats::apply_layout(&js, layout).await {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(last
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("layout failed")))
    }

    fn conf(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let routes: Vec<String> = (0..NODES)
            .filter(|j| *j != i)
            .map(|j| format!("\"nats-route://{}\"", self.links[&(i, j)].addr()))
            .collect();
        let sync = match self.sync {
            SyncPolicy::Default => String::new(),
            SyncPolicy::Always => "  sync_interval: always\n".to_owned(),
        };
        format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
             jetstream {{\n  store_dir: \"{store}\"\n{sync}}}\n\
             cluster {{\n  name: paytrack\n  listen: 127.0.0.1:{cluster}\n  advertise: \"127.0.0.1:1\"\n  \
             routes: [{routes}]\n}}\n{auth}",
            name = node.name,
            client = node.client_port,
            monitor = node.monitor_port,
            store = node.store.join("js").display(),
            cluster = node.cluster_port,
            routes = routes.join(", "),
            auth = paytrack_nats::auth::render_conf(),
        )
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let conf_path = self.dir.path().join(format!("{}.conf", self.nodes[i].name));
        std::fs::write(&conf_path, self.conf(i))?;
        let log = self.nodes[i].store.join("nats-server.log");
        let mut command = Command::new(paytrack_tests::nats::binary()?);
        command
            .arg("-c")
            .arg(&conf_path)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.passwords.hand_to(&mut command);
        self.nodes[i].child = Some(command.spawn().context("spawn nats-server")?);
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", self.nodes[i].client_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.nodes[i].store.join("nats-server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                bail!("nats-server {} exited with {status}: {tail:?}", self.nodes[i].name);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nats-server {} not accepting on {addr}", self.nodes[i].name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node index whose server name is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// A node's name.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i`'s process runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    async fn jsz(&self, i: usize) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/jsz", self.nodes[i].monitor_port);
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// The JetStream meta leader, as a running node reports it.
    pub async fn meta_leader(&self) -> Option<usize> {
        for i in 0..NODES {
            if !self.is_running(i) {
                continue;
            }
            if let Some(jsz) = self.jsz(i).await
                && let Some(leader) = jsz["meta_cluster"]["leader"].as_str()
                && let Some(index) = self.index_of(leader)
            {
                return Some(index);
            }
        }
        None
    }

    /// Waits until the running nodes agree on a meta leader.
    pub async fn wait_meta_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.meta_leader().await {
                return Ok(leader);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no JetStream meta leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node leading `stream`'s replicas.
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<usize> {
        let admin = self.connect_as(Role::Admin).await?;
        let js = async_nats::jetstream::new(admin);
        let mut handle = js.get_stream(stream).await?;
        let info = handle.info().await?;
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .context("the stream has no leader")?;
        self.index_of(&leader).context("leader is not a node of this cluster")
    }

    /// Kills node `i` with SIGKILL (its store stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// Cuts (or reopens) every link to and from node `i`: a partition isolating it.
    pub fn isolate(&self, i: usize, isolated: bool) {
        let mode = if isolated { Mode::Cut } else { Mode::Open };
        for ((from, to), link) in &self.links {
            if *from == i || *to == i {
                link.set(mode);
            }
        }
    }

    /// Sets the mode of every link (a slow or frozen network between all nodes).
    pub fn set_links(&self, mode: Mode) {
        for link in self.links.values() {
            link.set(mode);
        }
    }

    /// Records every JetStream store file now, as the data an fsync has made durable:
    /// with the default policy the caller marks it every [`DEFAULT_SYNC_INTERVAL`].
    /// Message blocks (`*.blk`, streams' and Raft logs') only grow, so their size is
    /// kept; every other file (consumer state, Raft state and snapshots, stream
    /// metadata, indexes) is rewritten in place, so its content is kept.
    pub fn mark_synced(&mut self) {
        self.synced = self
            .nodes
            .iter()
            .flat_map(|n| synced_files(&n.store.join("js")))
            .collect();
    }

    /// A power loss: every node killed at once. Under the default policy every file of
    /// every node goes back to the last modelled fsync ([`Cluster::mark_synced`]), as
    /// the page cache's loss would take it: message blocks are cut back to their
    /// synced size (a block created since is emptied), every other file gets its
    /// synced content back, and a file created since is removed. Returns the bytes
    /// taken away. Under `sync_interval: always` every acknowledged write was synced
    /// and nothing is taken away.
    pub fn power_loss(&mut self) -> u64 {
        self.lose_power(|_| false)
    }

    /// [`Cluster::power_loss`], but the consumers' state (each consumer's `obs/`
    /// directory and its Raft group `C-…`) keeps what it held at the kill: consumer
    /// state newer than the stream's blocks, a position past the stream's new end.
    pub fn power_loss_keeping_consumer_state(&mut self) -> u64 {
        self.lose_power(is_consumer_state)
    }

    fn lose_power(&mut self, keep: impl Fn(&Path) -> bool) -> u64 {
        for i in 0..NODES {
            self.kill(i);
        }
        if self.sync == SyncPolicy::Always {
            return 0;
        }
        let mut lost = 0;
        for node in &self.nodes {
            for (path, now) in synced_files(&node.store.join("js")) {
                if keep(&path) {
                    continue;
                }
                lost += revert(&path, &now, self.synced.get(&path));
            }
        }
        // Files synced and removed since come back (never message blocks: their
        // content was not kept, and a removed block was compacted away).
        for (path, synced) in &self.synced {
            if let Synced::Content(bytes) = synced
                && !keep(path)
                && !path.exists()
                && path.parent().is_some_and(|dir| std::fs::create_dir_all(dir).is_ok())
                && std::fs::write(path, bytes).is_ok()
            {
                lost += bytes.len() as u64;
            }
        }
        lost
    }

    /// Starts every stopped node and waits for a meta leader.
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        for i in 0..NODES {
            if !self.is_running(i) {
                self.spawn(i)?;
            }
        }
        for i in 0..NODES {
            self.wait_ready(i).await?;
        }
        self.wait_meta_leader(Duration::from_secs(120)).await?;
        Ok(())
    }

    /// Flips one byte in the middle of the largest message block of `stream` on node
    /// `i` (while the node is stopped): a disk that rots under one replica.
    pub fn flip_byte(&self, i: usize, stream: &str) -> anyhow::Result<PathBuf> {
        let dir = self.nodes[i].store.join("js");
        let block = block_files(&dir)
            .into_iter()
            .filter(|(path, _)| path.to_string_lossy().contains(&format!("/streams/{stream}/")))
            .max_by_key(|(_, size)| *size)
            .context("no block file of the stream")?;
        let mut bytes = std::fs::read(&block.0)?;
        let middle = bytes.len() / 2;
        if let Some(byte) = bytes.get_mut(middle) {
            *byte ^= 0xff;
        }
        std::fs::write(&block.0, bytes)?;
        Ok(block.0)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A store file as an fsync left it.
#[derive(Debug, Clone)]
enum Synced {
    /// A message block: its size (blocks are only appended to).
    Size(u64),
    /// Any other file: its content.
    Content(Vec<u8>),
}

/// Every file under `dir`: message blocks by size, every other file by content.
fn synced_files(dir: &Path) -> Vec<(PathBuf, Synced)> {
    let mut found = Vec::new();
    for (path, meta) in files_under(dir) {
        if is_block(&path) {
            found.push((path, Synced::Size(meta.len())));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, Synced::Content(bytes)));
        }
    }
    found
}

/// Every regular file under `dir` with its metadata; unreadable directories
/// and entries are passed over, as a store being written to may change under us.
fn files_under(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(path),
                Ok(meta) => found.push((path, meta)),
                Err(_) => {}
            }
        }
    }
    found
}

/// Puts `path` (now `now`) back as `synced` left it, or removes it when it was not
/// synced at all; returns the bytes taken away.
fn revert(path: &Path, now: &Synced, synced: Option<&Synced>) -> u64 {
    match (now, synced) {
        (Synced::Size(size), synced) => {
            let keep = match synced {
                Some(Synced::Size(kept)) => *kept,
                _ => 0,
            };
            if *size > keep
                && let Ok(file) = std::fs::OpenOptions::new().write(true).open(path)
                && file.set_len(keep).is_ok()
            {
                size - keep
            } else {
                0
            }
        }
        (Synced::Content(bytes), Some(Synced::Content(kept))) => {
            if bytes != kept && std::fs::write(path, kept).is_ok() {
                bytes.len() as u64
            } else {
                0
            }
        }
        (Synced::Content(bytes), _) => {
            if std::fs::remove_file(path).is_ok() {
                bytes.len() as u64
            } else {
                0
            }
        }
    }
}

fn is_block(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "blk")
}

/// A consumer's state: its `obs/<consumer>/` directory in a stream, or its Raft
/// group's directory (`C-…`).
fn is_consumer_state(path: &Path) -> bool {
    path.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        c == "obs" || c.starts_with("C-")
    })
}

/// Every message block file (`*.blk`) under `dir` with its size.
fn block_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    files_under(dir)
        .into_iter()
        .filter(|(path, _)| is_block(path))
        .map(|(path, meta)| (path, meta.len()))
        .collect()
}
