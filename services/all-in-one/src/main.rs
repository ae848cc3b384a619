//! `paytrack`: the whole mesh in one process for local use, plus developer commands.
//!
//! `paytrack run` starts ingest, the reconciler, the ledger-projector and ws-edge with
//! one shutdown token (the same libraries the four deployments run), and with
//! `--simulate` the provider simulator (sandbox gateways posting signed webhooks, with
//! light invented traffic). `paytrack layout` is the layout step: it applies every
//! stream and KV bucket as the NATS admin, which no service may do; `paytrack
//! nats-auth` prints the NATS users, with readers scoped to tenants. The operator
//! commands (module `cli`) talk to a running stack: `payments …`, `cancel`, `retry`,
//! `resolve`, `alerts …`, `tail`, `trigger`, `create-payment`, `webhook`; `mint-token`
//! prints a token.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use paytrack_shared::auth::JwtKeys;
use paytrack_shared::config::Settings;
use paytrack_shared::telemetry;
use paytrack_shared::{TenantId, Token};

use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "paytrack",
    about = "Real-time payment status tracking: the mesh in one process, and the operator's commands",
    after_help = "Settings come from PAYTRACK_* variables (source .dev/stack.env after `make up`); \
                  see docs/cli.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: cli::target::Connection,
    /// Print JSON (the API's answer, or each WebSocket frame) instead of lines.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest, reconciler, ledger-projector and ws-edge in this process.
    Run {
        /// Also run the provider simulator for PAYTRACK_SIMULATOR_TENANT (its API requires
        /// PAYTRACK_SIMULATOR_TOKEN).
        #[arg(long)]
        simulate: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Apply the JetStream layout (every stream and KV bucket, and the mirrors in the
    /// readers' accounts: the all-tenant reader's and each --tenant-reader's) as the
    /// NATS admin (PAYTRACK_NATS_ADMIN_PASSWORD), check it, and exit. Services only
    /// verify it.
    Layout {
        /// A tenant whose reader's account gets its mirrors (repeatable); the same
        /// tenants as the server's configuration (`nats-auth --tenant-reader`).
        #[arg(long = "tenant-reader")]
        tenant_readers: Vec<String>,
    },
    /// Print nats-server's accounts, users and permissions (nats/auth.conf) with a
    /// reader for each --tenant-reader, in an account of its own, which reads only
    /// its tenant; each password is a variable of the nats-server's environment.
    NatsAuth {
        /// A tenant to add a reader for, `reader-<tenant>` (repeatable).
        #[arg(long = "tenant-reader")]
        tenant_readers: Vec<String>,
    },
    /// Replay the streams into the empty database at PAYTRACK_DATABASE_URL, with
    /// progress, and print a summary.
    Rebuild,
    /// Print a JWT of --tenant for the configured issuer and audience
    /// (PAYTRACK_JWT_SECRET).
    MintToken {
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
    #[command(flatten)]
    Operator(cli::Command),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    let out = cli::output::Output { json: cli.json };
    match cli.command {
        Command::Run { simulate } => {
            telemetry::init_service("paytrack", &settings)?;
            let ran = run_mesh(&settings, simulate, paytrack_shared::shutdown::on_signals()).await;
            // The last spans are sent before the process ends.
            telemetry::shutdown();
            ran
        }
        Command::Layout { tenant_readers } => {
            let readers = parse_tenant_readers(&tenant_readers)?;
            telemetry::init_service("paytrack", &settings)?;
            let streams = lay_out(&settings, &readers).await?;
            println!("layout applied and verified: {streams} streams and buckets");
            Ok(())
        }
        Command::NatsAuth { tenant_readers } => {
            let readers = parse_tenant_readers(&tenant_readers)?;
            print!("{}", paytrack_nats::auth::render_conf_with(&readers));
            for reader in &readers {
                eprintln!(
                    "{}: give nats-server its password in {}",
                    reader.user(),
                    reader.password_env()
                );
            }
            Ok(())
        }
        Command::Migrate => {
            let pool = paytrack_shared::db::pool(&settings.database_url, 1)?;
            paytrack_shared::db::MIGRATOR.run(&pool).await?;
            Ok(())
        }
        Command::Rebuild => cli::rebuild::run(&settings, out).await,
        Command::MintToken {
            sub,
            ttl_secs,
            channels,
        } => {
            let keys = JwtKeys::new(settings.jwt_secret()?, &settings.jwt_issuer, &settings.jwt_audience);
            // The token's tenant is --tenant (PAYTRACK_TENANT), as for every command.
            let tenant = cli.connection.tenant()?;
            let channels = (!channels.is_empty()).then_some(channels);
            // A token whose `sub` is no user id would be refused wherever it is used.
            let sub = paytrack_shared::UserId::new(&sub).context("--sub")?;
            println!("{}", keys.mint(sub.as_str(), &tenant, ttl_secs, channels, None));
            Ok(())
        }
        Command::Operator(command) => cli::run(command, &cli.connection, &settings, out).await,
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
        anyhow::ensure!(
            settings.simulator_tenant.is_some(),
            "PAYTRACK_SIMULATOR_TENANT is required with --simulate"
        );
        let sim = paytrack_simulator::Config::from_settings(settings)?;
        let token = shutdown.clone();
        tasks.spawn(async move { paytrack_simulator::run(sim, token).await.context("simulator") });
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

/// The readers of the tenants given with `--tenant-reader`; a tenant that is no
/// subject token, or `_`, is refused with the option named.
fn parse_tenant_readers(tenants: &[String]) -> anyhow::Result<Vec<paytrack_nats::auth::TenantReader>> {
    tenants
        .iter()
        .map(|tenant| {
            let tenant_id = TenantId::parse(tenant).with_context(|| format!("--tenant-reader {tenant}"))?;
            paytrack_nats::auth::TenantReader::new(tenant_id).with_context(|| format!("--tenant-reader {tenant}"))
        })
        .collect()
}

/// How long the layout step waits for NATS to answer before it gives up.
const LAYOUT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The layout step: connects as the NATS admin, applies every stream and bucket and
/// the readers' mirrors (retrying while the server is not up yet, up to
/// [`LAYOUT_DEADLINE`]), then verifies the services' streams as the services will.
/// Returns how many streams the services' account holds.
async fn lay_out(settings: &Settings, readers: &[paytrack_nats::auth::TenantReader]) -> anyhow::Result<usize> {
    let credentials = paytrack_nats::Role::Admin
        .credentials(settings)
        .context("PAYTRACK_NATS_ADMIN_PASSWORD is not set: the layout is applied as the NATS admin")?;
    let client = paytrack_nats::connect(&settings.nats_url, "paytrack-layout", Some(&credentials)).await?;
    let js = paytrack_nats::jetstream(client.clone(), std::time::Duration::from_secs(10));
    let layout = paytrack_nats::Layout::from_settings(settings);
    let deadline = CancellationToken::new();
    let expire = deadline.clone();
    tokio::spawn(async move {
        tokio::time::sleep(LAYOUT_DEADLINE).await;
        expire.cancel();
    });
    paytrack_nats::retry_until_ready("apply the layout", &deadline, || async {
        paytrack_nats::apply_layout(&js, &layout).await?;
        paytrack_nats::apply_reader_layout(&client, &layout, readers).await
    })
    .await
    .with_context(|| {
        format!(
            "NATS at {} did not take the layout within {LAYOUT_DEADLINE:?}",
            settings.nats_url
        )
    })?;
    paytrack_nats::verify_layout(&js, &layout).await?;
    Ok(paytrack_nats::layout_streams(&layout).len())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every option read from the environment hides its value in `--help` (tokens,
    /// secrets and URLs with credentials come from the environment), in every
    /// command and subcommand, including ones added later.
    #[test]
    fn no_option_shows_its_environment_value() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                if arg.get_env().is_some() {
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{path} --{}: set hide_env_values = true",
                        arg.get_id()
                    );
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "paytrack");
    }
}
