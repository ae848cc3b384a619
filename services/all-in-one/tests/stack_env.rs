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

/// The inputs of `render_stack_env`, as stack-up.sh sets them, with the secrets above.
pub fn inputs(urls: &Urls<'_>, tenant: &str, jwt_secret: &str, token: &str) -> Vec<(String, String)> {
    let pairs = [
        ("nats_url", urls.nats.to_owned()),
        ("database_url", urls.database.to_owned()),
        ("ingest_url", urls.ingest.to_owned()),
        ("edge_url", urls.edge.to_owned()),
        ("simulator_url", urls.simulator.to_owned()),
        ("dev_tenant", tenant.to_owned()),
        ("other_tenant", "other".to_owned()),
        ("jwt_issuer", "paytrack".to_owned()),
        ("jwt_audience", "paytrack".to_owned()),
        ("token", token.to_owned()),
        ("other_token", format!("{token}.other")),
        ("dashboard_url", format!("{}/?token={token}", urls.edge)),
        ("PAYTRACK_JWT_SECRET", jwt_secret.to_owned()),
        ("WEBHOOK_SECRET_STDWEBHOOKS", SECRETS[2].to_owned()),
        ("WEBHOOK_SECRET_RAZORPAY", urls.razorpay_secret.to_owned()),
        ("WEBHOOK_SECRET_STRIPE", SECRETS[4].to_owned()),
        ("OTHER_WEBHOOK_SECRET_STDWEBHOOKS", SECRETS[2].to_owned()),
        ("PUSH_API_KEY", SECRETS[5].to_owned()),
        ("SIMULATOR_TOKEN", urls.simulator_token.to_owned()),
        ("PAYTRACK_NATS_ADMIN_PASSWORD", SECRETS[7].to_owned()),
        ("PAYTRACK_NATS_READER_PASSWORD", SECRETS[7].to_owned()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Where the stack is, and the secrets the simulator and Razorpay endpoint use.
pub struct Urls<'a> {
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
    /// The simulator's token.
    pub simulator_token: &'a str,
    /// The tenant's Razorpay webhook secret.
    pub razorpay_secret: &'a str,
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
    let script = if export_all {
        "set -a; source \"$0\"; set +a; exec \"$@\""
    } else {
        "source \"$0\"; exec \"$@\""
    };
    Ok(tokio::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(stack_env)
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
