//! The ws-edge binary: settings from the environment, then [`paytrack_ws_edge::run`].

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry::{self, LogSink};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init("paytrack-ws-edge", LogSink::Stdout(settings.log_format));
    let config = paytrack_ws_edge::Config::from_settings(&settings)?;
    paytrack_ws_edge::run(config, paytrack_shared::shutdown::on_signals()).await?;
    Ok(())
}
