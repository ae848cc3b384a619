//! Start-up that outlives NATS blips: a service retries its connection and stream
//! layout with backoff, reporting not-ready meanwhile, instead of exiting.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// First pause after a failed attempt.
const MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between attempts, so a recovered server is used within seconds.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The service was asked to stop before the step succeeded.
#[derive(Debug, thiserror::Error)]
#[error("stopped before {0} succeeded")]
pub struct Stopped(pub &'static str);

/// Runs `step` until it succeeds, pausing with exponential backoff (jittered, capped
/// at a few seconds) between attempts and logging each failure; gives up only when
/// `shutdown` is cancelled. Every error is taken as transient: a server that is down,
/// restarting or without JetStream yet comes back, and a misconfiguration stays
/// visible in the logs and in `/readyz` without killing the process.
pub async fn retry_until_ready<T, E, F, Fut>(
    what: &'static str,
    shutdown: &CancellationToken,
    step: F,
) -> Result<T, Stopped>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times();
    let attempts = step.retry(backoff).notify(|error: &E, pause: Duration| {
        tracing::warn!(%error, step = what, retry_in_ms = pause.as_millis() as u64, "start-up step failed; retrying");
    });
    tokio::select! {
        _ = shutdown.cancelled() => Err(Stopped(what)),
        result = attempts => match result {
            Ok(value) => Ok(value),
            // Unreachable without a limit on attempts; treated as a stop all the same.
            Err(_) => Err(Stopped(what)),
        },
    }
}

/// Why a service did not start.
#[derive(Debug, thiserror::Error)]
pub enum NotStarted {
    /// It was asked to stop first.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// The layout it found is wrong: it refuses to run on it.
    #[error(transparent)]
    WrongLayout(crate::LayoutError),
}

/// [`retry_until_ready`] for a step that verifies the layout: it waits while the
/// layout is missing or the server is away, but gives up at once, with
/// [`NotStarted::WrongLayout`], when the layout is wrong (waiting will not fix it).
pub async fn retry_until_laid_out<T, F, Fut>(
    what: &'static str,
    shutdown: &CancellationToken,
    step: F,
) -> Result<T, NotStarted>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, crate::LayoutError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times();
    let attempts = step
        .retry(backoff)
        .when(|error: &crate::LayoutError| !error.is_wrong())
        .notify(|error: &crate::LayoutError, pause: Duration| {
            tracing::warn!(%error, step = what, retry_in_ms = pause.as_millis() as u64, "start-up step failed; retrying");
        });
    tokio::select! {
        _ = shutdown.cancelled() => Err(Stopped(what).into()),
        result = attempts => result.map_err(|error| {
            tracing::error!(%error, step = what, "refusing to run on a wrong JetStream layout");
            NotStarted::WrongLayout(error)
        }),
    }
}

/// For a service that serves HTTP while it verifies the layout in the background:
/// the token its server runs until, cancelled (with the error kept) when the layout
/// turns out wrong, so the service stops and reports why.
#[derive(Clone)]
pub struct RefuseWrongLayout {
    serving: CancellationToken,
    wrong: std::sync::Arc<std::sync::Mutex<Option<crate::LayoutError>>>,
}

impl RefuseWrongLayout {
    /// Serving stops with `shutdown` or with a wrong layout.
    pub fn new(shutdown: &CancellationToken) -> RefuseWrongLayout {
        RefuseWrongLayout {
            serving: shutdown.child_token(),
            wrong: Default::default(),
        }
    }

    /// The token the HTTP server runs until.
    pub fn serving(&self) -> CancellationToken {
        self.serving.clone()
    }

    /// Stops serving because the layout is wrong.
    pub fn refuse(&self, wrong: crate::LayoutError) {
        *self.wrong.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(wrong);
        self.serving.cancel();
    }

    /// After serving ended: the wrong layout that ended it, if any.
    pub fn outcome(&self) -> Result<(), crate::LayoutError> {
        match self
            .wrong
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            Some(wrong) => Err(wrong),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_the_step_succeeds_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let value = retry_until_ready("counting", &shutdown, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err("not yet") } else { Ok(n) } }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);

        shutdown.cancel();
        let stopped = retry_until_ready("never", &shutdown, || async { Err::<(), _>("down") }).await;
        assert!(stopped.is_err());
    }

    #[tokio::test]
    async fn a_missing_layout_is_waited_for_and_a_wrong_one_refused() {
        let shutdown = CancellationToken::new();
        let mut calls = 0;
        let value = retry_until_laid_out("verify", &shutdown, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(crate::LayoutError::Missing { stream: "S".into() })
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);

        let mut calls = 0;
        let wrong = retry_until_laid_out("verify", &shutdown, || {
            calls += 1;
            async {
                Err::<(), _>(crate::LayoutError::Wrong {
                    stream: "S".into(),
                    differences: "sources".into(),
                })
            }
        })
        .await;
        assert!(matches!(wrong, Err(NotStarted::WrongLayout(_))));
        assert_eq!(calls, 1);
    }
}
