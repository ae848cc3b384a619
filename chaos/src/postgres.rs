//! PostgreSQL as production runs it (fsync and synchronous commit on), under a
//! temporary directory, so faults can stop it cleanly or kill its postmaster.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

/// A durable PostgreSQL server with one database, `paytrack`.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
}

fn pg_bin(tool: &str) -> String {
    let dir = std::env::var("PAYTRACK_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned());
    format!("{dir}/{tool}")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `tool args` as the postgres user when we are root (PostgreSQL refuses root).
fn as_postgres(tool: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(pg_bin(tool)).args(args);
        command.current_dir("/");
        command
    } else {
        let mut command = Command::new(pg_bin(tool));
        command.args(args);
        command
    }
}

impl Postgres {
    /// Initialises a cluster in a fresh directory, starts it and creates `paytrack`.
    pub async fn start() -> anyhow::Result<Postgres> {
        let dir = tempfile::Builder::new()
            .prefix("paytrack-chaos-pg-")
            .tempdir_in("/tmp")?
            .keep();
        if is_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(&dir).status()?;
            anyhow::ensure!(status.success(), "cannot chown {}", dir.display());
        }
        let data = dir.join("data");
        let data_str = data.to_str().context("path")?;
        let output = as_postgres(
            "initdb",
            &["-D", data_str, "-A", "trust", "-U", "postgres", "-E", "UTF8"],
        )
        .output()
        .context("run initdb")?;
        if !output.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&output.stderr));
        }
        let pg = Postgres {
            dir,
            port: paytrack_tests::free_port_for_later()?,
        };
        pg.resume().await?;
        let mut admin = PgConnection::connect(&pg.url_of("postgres")).await?;
        sqlx::query("CREATE DATABASE paytrack").execute(&mut admin).await?;
        Ok(pg)
    }

    fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The service URL of the `paytrack` database.
    pub fn url(&self) -> String {
        self.url_of("paytrack")
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the server (after a stop or a kill) and waits until it answers.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            // After a kill the old backends may still hold the shared memory: retry.
            let status = as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    &self.data(),
                    "-l",
                    &log,
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &options,
                    "start",
                ],
            )
            .stdout(std::process::Stdio::null())
            .status()?;
            if status.success() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("PostgreSQL did not start (log: {log})");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        while PgConnection::connect(&self.url_of("postgres")).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("PostgreSQL does not answer");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&self) -> anyhow::Result<()> {
        as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status()?;
        Ok(())
    }

    /// Kills the postmaster with SIGKILL, as a crash would.
    pub fn kill(&self) -> anyhow::Result<()> {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))?;
        let pid = pid_file
            .lines()
            .next()
            .context("empty postmaster.pid")?
            .trim()
            .to_owned();
        Command::new("kill").args(["-KILL", &pid]).status()?;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
