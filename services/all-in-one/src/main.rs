//! `paytrack`: the whole mesh in one process for local use, plus developer commands.
//!
//! `paytrack run` starts ingest, the reconciler, the ledger-projector and ws-edge with
//! one shutdown token (the same libraries the four deployments run), and with
//! `--simulate` a provider simulator posting signed webhooks. `paytrack mint-token`
//! prints a token for the configured issuer, e.g. for the dashboard.

mod simulator;

use anyhow::Context;
use clap::{Parser, Subcommand};
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::Settings;
use paytrack_shared::telemetry::{self, LogSink};
use paytrack_shared::{TenantId, Token};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "paytrack",
    about = "Real-time payment status tracking: the mesh in one process"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest, reconciler, ledger-projector and ws-edge in this process.
    Run {
        /// Also post simulated, signed provider webhooks for PAYTRACK_SIMULATOR_TENANT.
        #[arg(long)]
        simulate: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Replay the streams into the empty database at PAYTRACK_DATABASE_URL.
    Rebuild,
    /// Print a JWT for the configured issuer and audience.
    MintToken {
        /// The token's tenant.
        #[arg(long)]
        tenant: String,
        /// The token's subject.
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Restrict the token to these channels (repeatable); none: operator scope.
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    match cli.command {
        Command::Run { simulate } => {
            telemetry::init("paytrack", LogSink::Stdout(settings.log_format));
            run_mesh(&settings, simulate, paytrack_shared::shutdown::on_signals()).await
        }
        Command::Migrate => {
            let pool = paytrack_shared::db::pool(&settings.database_url, 1)?;
            paytrack_shared::db::MIGRATOR.run(&pool).await?;
            Ok(())
        }
        Command::Rebuild => {
            telemetry::init("paytrack", LogSink::Stdout(settings.log_format));
            let report = paytrack_ledger_projector::rebuild::rebuild_from_settings(&settings).await?;
            println!(
                "rebuilt {} transitions in {:.1} s: {report:?}",
                report.transitions,
                report.elapsed.as_secs_f64()
            );
            Ok(())
        }
        Command::MintToken {
            tenant,
            sub,
            ttl_secs,
            channels,
        } => {
            let keys = JwtKeys::new(settings.jwt_secret()?, &settings.jwt_issuer, &settings.jwt_audience);
            let tenant = TenantId::parse(&tenant).context("tenant")?;
            let channels = (!channels.is_empty()).then_some(channels);
            println!("{}", keys.mint(&sub, &tenant, ttl_secs, channels, None));
            Ok(())
        }
    }
}

/// Runs the four services until `shutdown`; if one fails, the others are stopped.
async fn run_mesh(settings: &Settings, simulate: bool, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Migrations first, so ingest's reads never meet a missing table.
    let pool = paytrack_shared::db::pool(&settings.database_url, 1)?;
    paytrack_shared::db::MIGRATOR.run(&pool).await.context("migrations")?;
    pool.close().await;

    let ingest = paytrack_ingest::Config::from_settings(settings)?;
    let reconciler = paytrack_reconciler::Config::from_settings(settings);
    let projector = paytrack_ledger_projector::Config::from_settings(settings);
    let edge = paytrack_ws_edge::Config::from_settings(settings)?;

    let mut tasks = tokio::task::JoinSet::new();
    let token = shutdown.clone();
    tasks.spawn(async move { paytrack_ingest::run(ingest, token).await.context("ingest") });
    let token = shutdown.clone();
    tasks.spawn(async move { paytrack_reconciler::run(reconciler, token).await.context("reconciler") });
    let token = shutdown.clone();
    tasks.spawn(async move {
        paytrack_ledger_projector::run(projector, token)
            .await
            .context("ledger-projector")
    });
    let token = shutdown.clone();
    tasks.spawn(async move { paytrack_ws_edge::run(edge, token).await.context("ws-edge") });
    if simulate {
        let sim = simulator::Simulator::from_settings(settings)?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            sim.run(token).await;
            Ok(())
        });
    }

    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = result {
            tracing::error!(error = format!("{error:#}"), "a service failed; stopping the mesh");
            first_error.get_or_insert(error);
        }
        shutdown.cancel();
    }
    first_error.map_or(Ok(()), Err)
}
