//! `paytrack-rebuild`: replays the streams into the empty database at `DATABASE_URL`
//! (settings from the environment, as the projector's), then prints what it did.

use paytrack_shared::config::Settings;
use paytrack_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init_service("paytrack-rebuild", &settings)?;
    let report = paytrack_ledger_projector::rebuild::rebuild_from_settings(&settings).await;
    telemetry::shutdown();
    let report = report?;
    println!(
        "rebuilt: {} transitions from {:?}, {} skipped, in {:.1} s",
        report.transitions,
        report.messages,
        report.skipped,
        report.elapsed.as_secs_f64()
    );
    Ok(())
}
