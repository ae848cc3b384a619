//! `paytrack`: the whole mesh in one process for local use, plus developer commands.
//!
//! `paytrack run` starts ingest, the reconciler, the ledger-projector and ws-edge with
//! one shutdown token (the same libraries the four deployments run), and with
//! `--simulate` the provider simulator (sandbox gateways posting signed webhooks, with
//! light invented traffic). `paytrack layout` is the layout step: it applies every
//! stream and KV bucket as the NATS admin, which no service may do. The operator
//! commands talk to a running stack: `mint-token`, `create-payment`, `webhook`,
//! `tail`, `evidence`.

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
        /// Also run the provider simulator for PAYTRACK_SIMULATOR_TENANT (its API requires
        /// PAYTRACK_SIMULATOR_TOKEN).
        #[arg(long)]
        simulate: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Apply the JetStream layout (every stream and KV bucket) as the NATS admin
    /// (PAYTRACK_NATS_ADMIN_PASSWORD), check it, and exit. Services only verify it.
    Layout,
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
    /// Create a payment: `POST /v1/payments` with an Idempotency-Key.
    CreatePayment {
        #[command(flatten)]
        target: TargetArgs,
        /// The merchant.
        #[arg(long)]
        merchant_id: String,
        /// Amount in minor units.
        #[arg(long)]
        amount_minor: i64,
        /// ISO 4217 currency.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// The rail: card, ach_debit, rtp, upi.
        #[arg(long, default_value = "card")]
        rail: String,
        /// ISO 3166 country.
        #[arg(long, default_value = "US")]
        country: String,
        /// The program, if any.
        #[arg(long)]
        program: Option<String>,
        /// The Idempotency-Key (default: a new UUID).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Send a webhook of one scheme, in its provider's own shape, signed with the
    /// tenant's configured secret(s) of that provider.
    Webhook {
        /// stdwebhooks, razorpay or stripe.
        #[arg(long)]
        provider: String,
        /// The endpoint's tenant.
        #[arg(long)]
        tenant: String,
        /// The paytrack payment.
        #[arg(long)]
        payment_id: String,
        /// Provider status: pending, held, succeeded, failed, cancelled, returned.
        #[arg(long, default_value = "succeeded")]
        status: String,
        /// The provider's reference (default: derived from the payment id).
        #[arg(long)]
        provider_ref: Option<String>,
        /// Amount in minor units.
        #[arg(long, default_value_t = 1250)]
        amount_minor: i64,
        /// ISO 4217 currency.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// The merchant.
        #[arg(long)]
        merchant_id: Option<String>,
        /// Leave the payment id out of the event's metadata (link by reference).
        #[arg(long)]
        no_metadata: bool,
        /// ingest's base URL (default: from PAYTRACK_INGEST_LISTEN).
        #[arg(long, env = "INGEST_URL")]
        ingest_url: Option<String>,
    },
    /// Subscribe to a channel and print every message with its position.
    Tail {
        #[command(flatten)]
        target: TargetArgs,
        /// The channel, e.g. payment:pay_1, merchant:m_1, payments, user:u1.
        #[arg(long)]
        channel: String,
        /// Resume after this position: `<epoch>:<seq>`.
        #[arg(long)]
        since: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Print a payment's evidence pack.
    Evidence {
        #[command(flatten)]
        target: TargetArgs,
        /// The payment.
        #[arg(long)]
        payment_id: String,
    },
}

/// Where the stack is and whose token to send.
#[derive(clap::Args)]
struct TargetArgs {
    /// The tenant (a token is minted for it unless --token is given).
    #[arg(long, env = "DEV_TENANT", default_value = "dev")]
    tenant: String,
    /// A bearer token to send instead of minting one.
    #[arg(long, env = "DEV_TOKEN")]
    token: Option<String>,
    /// ingest's base URL (default: from PAYTRACK_INGEST_LISTEN).
    #[arg(long, env = "INGEST_URL")]
    ingest_url: Option<String>,
    /// ws-edge's base URL (default: from PAYTRACK_EDGE_LISTEN).
    #[arg(long, env = "EDGE_URL")]
    edge_url: Option<String>,
}

impl TargetArgs {
    fn resolve(self, settings: &Settings) -> anyhow::Result<cli::Target> {
        cli::Target::new(settings, &self.tenant, self.ingest_url, self.edge_url, self.token)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    match cli.command {
        Command::Run { simulate } => {
            telemetry::init_service("paytrack", &settings)?;
            let ran = run_mesh(&settings, simulate, paytrack_shared::shutdown::on_signals()).await;
            // The last spans are sent before the process ends.
            telemetry::shutdown();
            ran
        }
        Command::Layout => {
            telemetry::init_service("paytrack", &settings)?;
            let streams = lay_out(&settings).await?;
            println!("layout applied and verified: {streams} streams and buckets");
            Ok(())
        }
        Command::Migrate => {
            let pool = paytrack_shared::db::pool(&settings.database_url, 1)?;
            paytrack_shared::db::MIGRATOR.run(&pool).await?;
            Ok(())
        }
        Command::Rebuild => {
            telemetry::init_service("paytrack", &settings)?;
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
        Command::CreatePayment {
            target,
            merchant_id,
            amount_minor,
            currency,
            rail,
            country,
            program,
            idempotency_key,
        } => {
            let target = target.resolve(&settings)?;
            let mut body = serde_json::json!({
                "merchant_id": merchant_id, "amount_minor": amount_minor, "currency": currency,
                "rail": rail, "country": country,
            });
            if let Some(program) = program {
                body["program"] = program.into();
            }
            let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            cli::create_payment(&target, body, &key).await.map(|_| ())
        }
        Command::Webhook {
            provider,
            tenant,
            payment_id,
            status,
            provider_ref,
            amount_minor,
            currency,
            merchant_id,
            no_metadata,
            ingest_url,
        } => {
            let ingest_url = ingest_url.unwrap_or_else(|| format!("http://{}", settings.ingest_listen));
            let args = cli::WebhookArgs {
                provider,
                tenant,
                payment_id,
                provider_ref,
                status,
                amount_minor,
                currency,
                merchant_id,
                no_metadata,
            };
            cli::send_webhook(&settings, &ingest_url, args).await.map(|_| ())
        }
        Command::Tail {
            target,
            channel,
            since,
            count,
        } => {
            let target = target.resolve(&settings)?;
            let since = since
                .map(|s| -> anyhow::Result<serde_json::Value> {
                    let (epoch, seq) = s.rsplit_once(':').context("--since is <epoch>:<seq>")?;
                    Ok(serde_json::json!({"epoch": epoch, "seq": seq.parse::<u64>().context("--since seq")?}))
                })
                .transpose()?;
            cli::tail(&target, &channel, since, count).await
        }
        Command::Evidence { target, payment_id } => {
            let target = target.resolve(&settings)?;
            cli::evidence(&target, &payment_id).await.map(|_| ())
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

/// How long the layout step waits for NATS to answer before it gives up.
const LAYOUT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The layout step: connects as the NATS admin, applies every stream and bucket
/// (retrying while the server is not up yet, up to [`LAYOUT_DEADLINE`]), then
/// verifies the result as the services will. Returns how many streams it holds.
async fn lay_out(settings: &Settings) -> anyhow::Result<usize> {
    let credentials = paytrack_nats::Role::Admin
        .credentials(settings)
        .context("PAYTRACK_NATS_ADMIN_PASSWORD is not set: the layout is applied as the NATS admin")?;
    let client = paytrack_nats::connect(&settings.nats_url, "paytrack-layout", Some(&credentials)).await?;
    let js = paytrack_nats::jetstream(client, std::time::Duration::from_secs(10));
    let layout = paytrack_nats::Layout::from_settings(settings);
    let deadline = CancellationToken::new();
    let expire = deadline.clone();
    tokio::spawn(async move {
        tokio::time::sleep(LAYOUT_DEADLINE).await;
        expire.cancel();
    });
    paytrack_nats::retry_until_ready("apply the layout", &deadline, || {
        paytrack_nats::apply_layout(&js, &layout)
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
