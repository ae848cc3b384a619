//! The CLI as `make up` leaves it: `.dev/stack.env` rendered by the same shell
//! function stack-up.sh uses (scripts/lib/stack-env.sh), sourced by a shell, then
//! `paytrack …`. A key renamed on either side fails here.

use std::process::Output;

/// Every secret the rendered stack.env holds; none may ever be printed.
pub const SECRETS: [&str; 9] = [
    "jwtsekrit0123456789",
    "tokensekrit0123456789",
    "whsec_c2Vrcml0LXN0ZC13ZWJob29rcy0x",
    "whsec_rzpsekrit0123456789",
    "whsec_stripesekrit0123456789",
    "pk_dev_pushsekrit0123456789",
    "sim_simsekrit0123456789",
    "padminsekrit0123456789",
    "dbsekrit0123456789",
];

/// What stack-up.sh knows when it writes stack.env: where everything is, and the
/// secrets.
pub struct Stack<'a> {
    /// NATS.
    pub nats: &'a str,
    /// PostgreSQL.
    pub database: &'a str,
    /// ingest.
    pub ingest: &'a str,
    /// ws-edge.
    pub edge: &'a str,
    /// The simulator.
    pub simulator: &'a str,
    /// The dev tenant.
    pub tenant: &'a str,
    /// The JWT secret.
    pub jwt_secret: &'a str,
    /// The operator token.
    pub token: &'a str,
    /// The simulator's token.
    pub simulator_token: &'a str,
    /// The tenant's webhook secrets: stdwebhooks, razorpay, stripe.
    pub webhook_secrets: [&'a str; 3],
    /// The NATS admin's and the projector's passwords.
    pub nats_passwords: [&'a str; 2],
}

/// The inputs of `render_stack_env`, as stack-up.sh sets them.
pub fn inputs(stack: &Stack<'_>) -> Vec<(String, String)> {
    let pairs = [
        ("nats_url", stack.nats.to_owned()),
        ("database_url", stack.database.to_owned()),
        ("ingest_url", stack.ingest.to_owned()),
        ("edge_url", stack.edge.to_owned()),
        ("simulator_url", stack.simulator.to_owned()),
        ("dev_tenant", stack.tenant.to_owned()),
        ("other_tenant", "other".to_owned()),
        ("jwt_issuer", "paytrack".to_owned()),
        ("jwt_audience", "paytrack".to_owned()),
        ("token", stack.token.to_owned()),
        ("other_token", format!("{}.other", stack.token)),
        ("dashboard_url", format!("{}/?token={}", stack.edge, stack.token)),
        ("PAYTRACK_JWT_SECRET", stack.jwt_secret.to_owned()),
        ("WEBHOOK_SECRET_STDWEBHOOKS", stack.webhook_secrets[0].to_owned()),
        ("WEBHOOK_SECRET_RAZORPAY", stack.webhook_secrets[1].to_owned()),
        ("WEBHOOK_SECRET_STRIPE", stack.webhook_secrets[2].to_owned()),
        ("OTHER_WEBHOOK_SECRET_STDWEBHOOKS", stack.webhook_secrets[0].to_owned()),
        ("PUSH_API_KEY", SECRETS[5].to_owned()),
        ("SIMULATOR_TOKEN", stack.simulator_token.to_owned()),
        ("PAYTRACK_NATS_ADMIN_PASSWORD", stack.nats_passwords[0].to_owned()),
        ("PAYTRACK_NATS_PROJECTOR_PASSWORD", stack.nats_passwords[1].to_owned()),
        ("PAYTRACK_NATS_READER_PASSWORD", stack.nats_passwords[0].to_owned()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The repository's scripts/lib/stack-env.sh.
fn library() -> String {
    format!("{}/../../scripts/lib/stack-env.sh", env!("CARGO_MANIFEST_DIR"))
}

/// Renders stack.env into a temporary file and returns it.
pub fn render(inputs: &[(String, String)]) -> anyhow::Result<tempfile::NamedTempFile> {
    let output = std::process::Command::new("bash")
        .args(["-c", "source \"$0\" && render_stack_env", &library()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(inputs.iter().map(|(k, v)| (k, v)))
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "render_stack_env failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &output.stdout)?;
    Ok(file)
}

/// Runs `paytrack args…` in a clean shell after `source <stack_env>` (with
/// `export_all`, every variable of the file is exported, as `set -a` would).
pub async fn paytrack(stack_env: &std::path::Path, export_all: bool, args: &[&str]) -> anyhow::Result<Output> {
    paytrack_with(stack_env, export_all, &[], args).await
}

/// [`paytrack`] with `overrides` (`KEY=value`) set after the file is sourced.
pub async fn paytrack_with(
    stack_env: &std::path::Path,
    export_all: bool,
    overrides: &[String],
    args: &[&str],
) -> anyhow::Result<Output> {
    let script = if export_all {
        "set -a; source \"$0\"; set +a; exec env \"$@\""
    } else {
        "source \"$0\"; exec env \"$@\""
    };
    Ok(tokio::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(stack_env)
        .args(overrides)
        .arg(env!("CARGO_BIN_EXE_paytrack"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYTRACK_LOG_FORMAT", "pretty")
        .kill_on_drop(true)
        .output()
        .await?)
}

/// stdout and stderr together.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
