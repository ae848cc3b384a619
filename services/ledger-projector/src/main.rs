//! The projector binary: settings from the environment, then [`paytrack_ledger_projector::run`].

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry::{self, LogSink};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init("paytrack-ledger-projector", LogSink::Stdout(settings.log_format));
    let config = paytrack_ledger_projector::Config::from_settings(&settings);
    paytrack_ledger_projector::run(config, paytrack_shared::shutdown::on_signals()).await?;
    Ok(())
}
