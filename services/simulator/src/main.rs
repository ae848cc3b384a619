//! `paytrack-simulator`: the provider simulator as its own process.

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init_service("paytrack-simulator", &settings)?;
    let config = paytrack_simulator::Config::from_settings(&settings)?;
    let ran = paytrack_simulator::run(config, paytrack_shared::shutdown::on_signals()).await;
    // The last spans are sent before the process ends.
    telemetry::shutdown();
    Ok(ran?)
}
