//! Per-tenant fairness of the work a subscribe costs: a session may start at most so
//! many subscribes per second, and each tenant at most so many subscribes that may
//! read JetStream at once (a latest-position get, a snapshot, a replay), with a bounded
//! queue behind them. The edge's shared pool of JetStream reads is larger than one
//! tenant's share, so one tenant hammering subscribes waits in its own queue (and is
//! then refused with 4029) while the other tenants' subscribes go through.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use paytrack_shared::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a subscribe was refused before it started (sent as `error` 4029).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The session's subscribe rate.
    #[error("subscribe rate limit: at most {0} new subscribes per second per session; retry later")]
    Rate(u32),
    /// The tenant's subscribes in progress on this edge.
    #[error("too many subscribes in progress for this tenant ({0} queued); retry later")]
    Tenant(usize),
}

/// The limits, shared by every session of an edge.
pub struct Fairness {
    rate: NonZeroU32,
    in_flight: usize,
    queued: usize,
    tenants: Mutex<HashMap<TenantId, Arc<Slots>>>,
}

struct Slots {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// A subscribe admitted into its tenant's queue; [`Admission::enter`] waits for a slot.
/// It counts against the tenant's queue until dropped.
pub struct Admission {
    slots: Arc<Slots>,
}

/// One of a tenant's slots, held while its subscribe runs.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _admission: Admission,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.slots.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// Waits for one of the tenant's slots, held until the [`Slot`] is dropped.
    pub async fn enter(self) -> Option<Slot> {
        let permit = self.slots.permits.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _permit: permit,
            _admission: self,
        })
    }
}

impl Fairness {
    /// `rate` new subscribes per second per session (also its burst), `in_flight`
    /// subscribes per tenant at once, `queued` more per tenant waiting.
    pub fn new(rate: u32, in_flight: usize, queued: usize) -> Fairness {
        Fairness {
            rate: NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN),
            in_flight: in_flight.max(1),
            queued,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// A session's subscribe rate limiter.
    pub fn session_limiter(&self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(Quota::per_second(self.rate))
    }

    /// Checks a new subscribe against the session's rate, then queues it behind its
    /// tenant's subscribes in progress, or refuses it when that queue is full.
    pub fn admit(&self, limiter: &DefaultDirectRateLimiter, tenant: &TenantId) -> Result<Admission, Refused> {
        self.check_rate(limiter)?;
        self.queue(tenant)
    }

    /// Counts a new subscribe against the session's rate.
    pub fn check_rate(&self, limiter: &DefaultDirectRateLimiter) -> Result<(), Refused> {
        if limiter.check().is_err() {
            metrics::counter!("paytrack_edge_subscribes_refused_total", "limit" => "rate").increment(1);
            return Err(Refused::Rate(self.rate.get()));
        }
        Ok(())
    }

    /// Queues a subscribe that may read JetStream behind its tenant's subscribes in
    /// progress, or refuses it when that queue is full.
    pub fn queue(&self, tenant: &TenantId) -> Result<Admission, Refused> {
        let slots = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            tenants
                .entry(tenant.clone())
                .or_insert_with(|| {
                    Arc::new(Slots {
                        permits: Arc::new(Semaphore::new(self.in_flight)),
                        waiting: AtomicUsize::new(0),
                    })
                })
                .clone()
        };
        let waiting = slots.waiting.fetch_add(1, Ordering::Relaxed);
        let admission = Admission { slots };
        if waiting >= self.in_flight + self.queued {
            metrics::counter!("paytrack_edge_subscribes_refused_total", "limit" => "tenant").increment(1);
            tracing::info!(%tenant, waiting, "tenant's subscribe queue full");
            return Err(Refused::Tenant(self.queued));
        }
        Ok(admission)
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn one_tenant_full_queue_does_not_touch_another() {
        let fairness = Fairness::new(1_000, 2, 1);
        let limiter = fairness.session_limiter();
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        let held: Vec<_> = (0..3).map(|_| fairness.admit(&limiter, &a).unwrap()).collect();
        assert_eq!(fairness.admit(&limiter, &a).err(), Some(Refused::Tenant(1)));
        assert!(fairness.admit(&limiter, &b).is_ok());
        // Two of a's enter at once; the third waits for a slot.
        let mut held = held.into_iter();
        let first = held.next().unwrap().enter().now_or_never().flatten();
        let second = held.next().unwrap().enter().now_or_never().flatten();
        assert!(first.is_some() && second.is_some());
        let mut third = Box::pin(held.next().unwrap().enter());
        assert!((&mut third).now_or_never().is_none());
        assert!(fairness.admit(&limiter, &a).is_err());
        drop(first);
        assert!(fairness.admit(&limiter, &a).is_ok());
    }

    #[test]
    fn the_session_rate_is_capped() {
        let fairness = Fairness::new(3, 100, 100);
        let limiter = fairness.session_limiter();
        let tenant = TenantId::new("a").unwrap();
        let admitted = (0..10).filter(|_| fairness.admit(&limiter, &tenant).is_ok()).count();
        assert_eq!(admitted, 3);
        assert_eq!(fairness.admit(&limiter, &tenant).err(), Some(Refused::Rate(3)));
    }
}
