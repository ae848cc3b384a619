//! The reconciler binary: settings from the environment, then [`paytrack_reconciler::run`].

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init_service("paytrack-reconciler", &settings)?;
    let config = paytrack_reconciler::Config::from_settings(&settings);
    let ran = paytrack_reconciler::run(config, paytrack_shared::shutdown::on_signals()).await;
    // The last spans are sent before the process ends.
    telemetry::shutdown();
    Ok(ran?)
}
