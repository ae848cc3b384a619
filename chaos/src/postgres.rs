//! PostgreSQL as production runs it (fsync and synchronous commit on), under a
//! temporary directory, so faults can stop it cleanly or kill its postmaster. The
//! cluster is created and run as the test harness does it (`paytrack_tests::pg`);
//! only the server's settings differ.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use paytrack_tests::pg::{InitSync, init_cluster, pg_tool};
use sqlx::{Connection, PgConnection};

/// A durable PostgreSQL server with one database, `paytrack`.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
}

/// `tool args` (a PostgreSQL program) as the postgres user when we are root.
fn as_postgres(tool: &str, args: &[&str]) -> anyhow::Result<Command> {
    Ok(paytrack_tests::pg::as_postgres(&pg_tool(tool)?, args))
}

impl Postgres {
    /// Initialises a cluster in a fresh directory, starts it and creates `paytrack`.
    pub async fn start() -> anyhow::Result<Postgres> {
        let dir = init_cluster("paytrack-chaos-pg-", InitSync::Sync)?;
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
            )?
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
        as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])?
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
        if let Ok(mut command) = as_postgres("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]) {
            let _ = command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster made with the harness's helpers starts, serves `paytrack`, stops
    /// cleanly and comes back after a crash of its postmaster.
    #[tokio::test]
    async fn starts_stops_and_comes_back_after_a_kill() -> anyhow::Result<()> {
        let pg = Postgres::start().await?;
        let answer = |url: String| async move {
            let mut connection = PgConnection::connect(&url).await?;
            let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut connection).await?;
            anyhow::Ok(one)
        };
        assert_eq!(answer(pg.url()).await?, 1);
        pg.stop()?;
        assert!(
            PgConnection::connect(&pg.url()).await.is_err(),
            "stopped, yet answering"
        );
        pg.resume().await?;
        pg.kill()?;
        pg.resume().await?;
        assert_eq!(answer(pg.url()).await?, 1);
        Ok(())
    }
}
