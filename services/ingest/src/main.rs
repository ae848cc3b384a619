//! The ingest binary: settings from the environment, then [`paytrack_ingest::run`].

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry::{self, LogSink};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init("paytrack-ingest", LogSink::Stdout(settings.log_format));
    let config = paytrack_ingest::Config::from_settings(&settings)?;
    paytrack_ingest::run(config, paytrack_shared::shutdown::on_signals()).await?;
    Ok(())
}
