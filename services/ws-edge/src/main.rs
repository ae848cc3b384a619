//! The ws-edge binary: settings from the environment, then [`paytrack_ws_edge::run`].

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init_service("paytrack-ws-edge", &settings)?;
    let config = paytrack_ws_edge::Config::from_settings(&settings)?;
    let ran = paytrack_ws_edge::run(config, paytrack_shared::shutdown::on_signals()).await;
    // The last spans are sent before the process ends.
    telemetry::shutdown();
    Ok(ran?)
}
