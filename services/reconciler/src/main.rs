//! The reconciler binary: settings from the environment, then [`paytrack_reconciler::run`].

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry::{self, LogSink};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init("paytrack-reconciler", LogSink::Stdout(settings.log_format));
    let config = paytrack_reconciler::Config::from_settings(&settings);
    paytrack_reconciler::run(config, paytrack_shared::shutdown::on_signals()).await?;
    Ok(())
}
