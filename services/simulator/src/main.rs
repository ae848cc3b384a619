//! `paytrack-simulator`: the provider simulator as its own process.

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry::{self, LogSink};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init("paytrack-simulator", LogSink::Stdout(settings.log_format));
    let config = paytrack_simulator::Config::from_settings(&settings)?;
    paytrack_simulator::run(config, paytrack_shared::shutdown::on_signals()).await?;
    Ok(())
}
