//! The identity provider's JWKS, fetched from its URL at start and refreshed
//! periodically, so a key rotation reaches the edge without a restart. A failed
//! refresh keeps the keys the edge has.

use std::time::Duration;

use paytrack_shared::auth::JwtKeys;
use tokio_util::sync::CancellationToken;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches the JWKS at `url` into `keys` (and every clone of them); returns the
/// number of keys, or why it could not.
pub async fn fetch(keys: &JwtKeys, url: &str) -> Result<usize, String> {
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    let response = response.error_for_status().map_err(|e| format!("{url}: {e}"))?;
    let document = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    keys.replace_jwks(&document).map_err(|e| format!("{url}: {e}"))
}

/// Fetches the JWKS again every `every` until `shutdown`.
pub async fn refresh(keys: JwtKeys, url: String, every: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match fetch(&keys, &url).await {
            Ok(count) => tracing::debug!(%url, keys = count, "JWKS refreshed"),
            Err(error) => tracing::warn!(%error, "JWKS refresh failed; keeping the current keys"),
        }
    }
}
