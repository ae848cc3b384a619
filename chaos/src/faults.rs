//! The faults, each injected alone and healed: what a node, a pod, a network or a
//! disk can do to the production shape.

use std::time::Duration;

use paytrack_shared::subjects;

use crate::cluster::NODES;
use crate::services::Kind;
use crate::shape::Shape;

/// How long a SIGSTOPped replica stays stopped: longer than the consumers' ack
/// wait (30 s), so its in-flight messages are redelivered to the other replica.
pub const PAUSE: Duration = Duration::from_secs(35);

/// How long PostgreSQL stays stopped.
pub const DATABASE_DOWN: Duration = Duration::from_secs(30);

/// How long a killed nats node or a partitioned one stays away.
pub const NODE_AWAY: Duration = Duration::from_secs(15);

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of one replica, restarted after a few seconds (as Kubernetes does).
    KillReplica(Kind, usize),
    /// SIGSTOP of one replica for [`PAUSE`], then SIGCONT.
    PauseReplica(Kind, usize),
    /// kill -9 of one nats node.
    KillNode(usize),
    /// kill -9 of the JetStream meta leader.
    KillMetaLeader,
    /// kill -9 of PAYTRACK_STATUS's stream leader.
    KillStreamLeader,
    /// A partition isolating one nats node, then healed.
    Partition(usize),
    /// Every nats node killed at once (see [`crate::cluster::Cluster::power_loss`]).
    PowerLoss,
    /// PostgreSQL stopped for [`DATABASE_DOWN`].
    DatabaseStopped,
    /// PostgreSQL's postmaster killed -9, then started again.
    DatabaseKilled,
    /// One byte flipped in a PAYTRACK_STATUS block on one stopped node.
    FlippedByte(usize),
}

impl Fault {
    /// The row label of the fault table.
    pub fn label(self) -> String {
        match self {
            Fault::KillReplica(Kind::Edge, i) => format!("kill -9 ws-edge-{i} with clients connected"),
            Fault::KillReplica(kind, i) => format!("kill -9 {}-{i}", kind.label()),
            Fault::PauseReplica(kind, i) => format!("SIGSTOP {}-{i} {}s, SIGCONT", kind.label(), PAUSE.as_secs()),
            Fault::KillNode(i) => format!("kill -9 nats n{}", i + 1),
            Fault::KillMetaLeader => "kill -9 nats meta leader".to_owned(),
            Fault::KillStreamLeader => "kill -9 PAYTRACK_STATUS leader".to_owned(),
            Fault::Partition(i) => format!("partition isolating nats n{} {}s", i + 1, NODE_AWAY.as_secs()),
            Fault::PowerLoss => "power loss: all nats nodes killed at once".to_owned(),
            Fault::DatabaseStopped => format!("PostgreSQL stopped {}s", DATABASE_DOWN.as_secs()),
            Fault::DatabaseKilled => "PostgreSQL killed -9".to_owned(),
            Fault::FlippedByte(i) => format!("byte flipped in a PAYTRACK_STATUS block on n{}", i + 1),
        }
    }

    /// Every fault alone, in the order the table lists them (power loss apart: it
    /// runs once per sync policy).
    pub fn each_alone() -> Vec<Fault> {
        let mut faults = Vec::new();
        for kind in Kind::REPLICATED {
            faults.push(Fault::KillReplica(kind, 1));
        }
        faults.push(Fault::PauseReplica(Kind::Reconciler, 1));
        faults.push(Fault::PauseReplica(Kind::Projector, 2));
        faults.push(Fault::KillNode(2));
        faults.push(Fault::KillMetaLeader);
        faults.push(Fault::KillStreamLeader);
        faults.push(Fault::Partition(0));
        faults.push(Fault::DatabaseStopped);
        faults.push(Fault::DatabaseKilled);
        faults.push(Fault::FlippedByte(1));
        faults
    }

    /// The fault a short name on the command line stands for: `kill-<service>`,
    /// `pause-<service>`, `kill-node`, `kill-meta-leader`, `kill-stream-leader`,
    /// `partition`, `power-loss`, `database-stopped`, `database-killed`, `flip-byte`.
    pub fn named(name: &str) -> Option<Fault> {
        let kind = |service: &str| Kind::REPLICATED.into_iter().find(|k| k.label() == service);
        Some(match name {
            "kill-node" => Fault::KillNode(2),
            "kill-meta-leader" => Fault::KillMetaLeader,
            "kill-stream-leader" => Fault::KillStreamLeader,
            "partition" => Fault::Partition(0),
            "power-loss" => Fault::PowerLoss,
            "database-stopped" => Fault::DatabaseStopped,
            "database-killed" => Fault::DatabaseKilled,
            "flip-byte" => Fault::FlippedByte(1),
            other => {
                if let Some(service) = other.strip_prefix("kill-") {
                    Fault::KillReplica(kind(service)?, 1)
                } else if let Some(service) = other.strip_prefix("pause-") {
                    Fault::PauseReplica(kind(service)?, 1)
                } else {
                    return None;
                }
            }
        })
    }

    /// The faults a random schedule draws from.
    pub fn pool() -> Vec<Fault> {
        let mut pool = Vec::new();
        for kind in Kind::REPLICATED {
            for i in 1..=2 {
                pool.push(Fault::KillReplica(kind, i));
            }
        }
        pool.push(Fault::PauseReplica(Kind::Reconciler, 2));
        pool.push(Fault::PauseReplica(Kind::Ingest, 1));
        for i in 0..NODES {
            pool.push(Fault::KillNode(i));
            pool.push(Fault::Partition(i));
        }
        pool.push(Fault::KillMetaLeader);
        pool.push(Fault::KillStreamLeader);
        pool.push(Fault::DatabaseKilled);
        pool.push(Fault::DatabaseStopped);
        pool
    }

    /// Injects the fault, holds it, and heals it. Returns a note for the table (what
    /// was hit).
    pub async fn run(self, shape: &mut Shape) -> anyhow::Result<String> {
        match self {
            Fault::KillReplica(kind, i) => {
                shape.replica(kind, i).kill();
                tokio::time::sleep(Duration::from_secs(3)).await;
                shape.restart_stopped().await?;
                Ok(String::new())
            }
            Fault::PauseReplica(kind, i) => {
                shape.replica(kind, i).signal("STOP")?;
                tokio::time::sleep(PAUSE).await;
                shape.replica(kind, i).signal("CONT")?;
                Ok(String::new())
            }
            Fault::KillNode(i) => kill_node(shape, i).await,
            Fault::KillMetaLeader => {
                let leader = shape.cluster.wait_meta_leader(Duration::from_secs(60)).await?;
                kill_node(shape, leader).await
            }
            Fault::KillStreamLeader => {
                let leader = shape.cluster.stream_leader(subjects::STREAM_STATUS).await?;
                kill_node(shape, leader).await
            }
            Fault::Partition(i) => {
                shape.cluster.isolate(i, true);
                tokio::time::sleep(NODE_AWAY).await;
                shape.cluster.isolate(i, false);
                Ok(String::new())
            }
            Fault::PowerLoss => {
                let lost = shape.cluster.power_loss();
                tokio::time::sleep(Duration::from_secs(5)).await;
                shape.cluster.restart_all().await?;
                Ok(format!(
                    "{}; {lost} unsynced bytes dropped",
                    shape.cluster.sync().label()
                ))
            }
            Fault::DatabaseStopped => {
                shape.postgres.stop()?;
                tokio::time::sleep(DATABASE_DOWN).await;
                shape.postgres.resume().await?;
                Ok(String::new())
            }
            Fault::DatabaseKilled => {
                shape.postgres.kill()?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                shape.postgres.resume().await?;
                Ok(String::new())
            }
            Fault::FlippedByte(i) => {
                shape.cluster.kill(i);
                let block = shape.cluster.flip_byte(i, subjects::STREAM_STATUS)?;
                shape.cluster.restart(i).await?;
                Ok(format!(
                    "{}",
                    block.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()
                ))
            }
        }
    }
}

async fn kill_node(shape: &mut Shape, i: usize) -> anyhow::Result<String> {
    let name = shape.cluster.name(i).to_owned();
    shape.cluster.kill(i);
    tokio::time::sleep(NODE_AWAY).await;
    shape.cluster.restart(i).await?;
    Ok(format!("node {name}"))
}
