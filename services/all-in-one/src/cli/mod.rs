//! The operator commands of `paytrack`: reads and commands over ingest's REST API,
//! alerts, a channel followed over ws-edge's WebSocket, the simulator's scenarios,
//! and signed webhooks of any scheme. Each talks to a running stack as an operator's
//! script would, configured by the same `PAYTRACK_*` variables as the services (those
//! `.dev/stack.env` exports).

pub mod alerts;
pub mod api;
pub mod commands;
pub mod create;
pub mod output;
pub mod payments;
pub mod rebuild;
pub mod tail;
pub mod target;
pub mod trigger;
pub mod webhook;

use paytrack_shared::config::Settings;

use self::output::Output;
use self::target::Connection;

/// An operator command.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Read payments: list, get, timeline, evidence, ledger.
    #[command(subcommand)]
    Payments(payments::PaymentsCommand),
    /// Cancel a payment (`POST /v1/payments/{id}/cancel`).
    Cancel {
        /// The payment.
        payment_id: String,
        /// Why (recorded with the command).
        #[arg(long)]
        reason: Option<String>,
        /// The Idempotency-Key (default: a new one).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Retry a failed payment (`POST /v1/payments/{id}/retry`).
    Retry {
        /// The payment.
        payment_id: String,
        /// Why (recorded with the command).
        #[arg(long)]
        reason: Option<String>,
        /// The Idempotency-Key (default: a new one).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Resolve `investigation_required` (`POST /v1/payments/{id}/resolve`).
    Resolve {
        /// The payment.
        payment_id: String,
        /// Why: required, audited.
        #[arg(long)]
        reason: String,
        /// The status it resolves to: succeeded, failed, cancelled or returned.
        #[arg(long)]
        status: String,
        /// The Idempotency-Key (default: a new one).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List or acknowledge alerts.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Follow a channel: human lines, or every frame with --json; exits non-zero on
    /// an error frame.
    Tail {
        /// The channel, e.g. payment:pay_1, merchant:m_1, payments, user:u1.
        channel: String,
        /// Resume after this position: `<epoch>:<seq>`.
        #[arg(long)]
        since: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Play a scenario at the provider simulator (a payment's story), or list them.
    Trigger {
        /// The scenario, e.g. stuck_pending; none with --list.
        #[arg(required_unless_present = "list")]
        scenario: Option<String>,
        /// The sandbox provider (default: the scenario's own).
        #[arg(long)]
        provider: Option<String>,
        /// List the scenarios instead.
        #[arg(long, conflicts_with = "scenario")]
        list: bool,
    },
    /// Create a payment: `POST /v1/payments` with an Idempotency-Key.
    CreatePayment {
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
    /// tenant's configured secret(s) of that provider (PAYTRACK_WEBHOOK_SECRETS).
    Webhook {
        /// stdwebhooks, razorpay or stripe.
        #[arg(long)]
        provider: String,
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
    },
}

/// Runs an operator command against the stack `connection` names.
pub async fn run(command: Command, connection: &Connection, settings: &Settings, out: Output) -> anyhow::Result<()> {
    match command {
        Command::Payments(read) => payments::run(&connection.ingest(settings)?, read, out).await,
        Command::Cancel {
            payment_id,
            reason,
            idempotency_key,
        } => {
            let api = connection.ingest(settings)?;
            commands::run(
                &api,
                &payment_id,
                commands::Action::Cancel,
                reason,
                idempotency_key,
                out,
            )
            .await
        }
        Command::Retry {
            payment_id,
            reason,
            idempotency_key,
        } => {
            let api = connection.ingest(settings)?;
            commands::run(&api, &payment_id, commands::Action::Retry, reason, idempotency_key, out).await
        }
        Command::Resolve {
            payment_id,
            reason,
            status,
            idempotency_key,
        } => {
            let api = connection.ingest(settings)?;
            let action = commands::Action::Resolve { status };
            commands::run(&api, &payment_id, action, Some(reason), idempotency_key, out).await
        }
        Command::Alerts(command) => alerts::run(&connection.ingest(settings)?, command, out).await,
        Command::Tail { channel, since, count } => {
            let args = tail::TailArgs {
                channel,
                since: since.as_deref().map(tail::since).transpose()?,
                count,
            };
            tail::run(&connection.ws_url(settings), &connection.token(settings)?, args, out).await
        }
        Command::Trigger { scenario, provider, .. } => {
            let tenant = connection.tenant()?;
            trigger::run(
                &connection.simulator(settings)?,
                scenario,
                provider,
                tenant.as_str(),
                out,
            )
            .await
        }
        Command::CreatePayment {
            merchant_id,
            amount_minor,
            currency,
            rail,
            country,
            program,
            idempotency_key,
        } => {
            let mut body = serde_json::json!({
                "merchant_id": merchant_id, "amount_minor": amount_minor, "currency": currency,
                "rail": rail, "country": country,
            });
            if let Some(program) = program {
                body["program"] = program.into();
            }
            let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            create::run(&connection.ingest(settings)?, body, &key, out).await
        }
        Command::Webhook {
            provider,
            payment_id,
            status,
            provider_ref,
            amount_minor,
            currency,
            merchant_id,
            no_metadata,
        } => {
            let args = webhook::WebhookArgs {
                provider,
                payment_id,
                provider_ref,
                status,
                amount_minor,
                currency,
                merchant_id,
                no_metadata,
            };
            let tenant = connection.tenant()?;
            webhook::send_webhook(settings, &connection.ingest_url(settings), &tenant, args, out).await
        }
    }
}
