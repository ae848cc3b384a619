//! The live consumer of PAYTRACK_STATUS's transitions: messages are pulled in batches
//! (as many as are ready, up to [`BATCH`]), each batch applied in one transaction
//! ([`crate::project`]), acknowledged after its commit, and its checkpoints
//! published from the outbox (their acknowledgements confirm them and decide
//! finality, [`crate::outbox`]; the projector does not read its own checkpoints
//! back).
//!
//! Several instances may share the durable consumer; per-payment order is kept by the
//! version guard of [`crate::project`] (a version whose predecessor is not applied yet
//! is redelivered shortly). While PostgreSQL is unavailable the batch is held (its
//! messages kept in progress), the consumer reports itself stalled (`/readyz` 503),
//! and the batch is retried until the database answers: nothing is parked for an
//! outage.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use paytrack_nats::{HandleError, Supervisor};
use paytrack_shared::envelope::Transition;
use paytrack_shared::health::Readiness;
use paytrack_shared::subjects;
use paytrack_shared::telemetry::{self, NatsHeaders};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::checkpoints::Due;
use crate::project::{self, Applied, BatchError, Item, Origin};

/// Most messages applied in one transaction.
pub const BATCH: usize = 1_000;
/// How long a batch waits for more ready messages once it has some.
const GATHER: Duration = Duration::from_millis(2);
/// How soon a version that came before its predecessor is delivered again.
const DEFER_DELAY: Duration = Duration::from_millis(100);
/// After this many deliveries a deferred version counts as failing (its predecessor
/// may have been parked), so the retry policy eventually parks it too.
const DEFER_DELIVERIES: i64 = 300;

/// The durable consumer of PAYTRACK_STATUS's transitions. Checkpoints are left out:
/// reading its own back would cost the stream two deliveries and two acks per
/// transition to learn what the publish acknowledgement already said.
pub fn consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(paytrack_nats::CONSUMER_PROJECTOR_STATUS.to_owned()),
        filter_subject: subjects::STATUS_ALL.to_owned(),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        // A batch held through a database outage is kept in progress explicitly, so a
        // short wait only speeds up redelivery after a crash.
        ack_wait: Duration::from_secs(10),
        max_deliver: -1,
        max_ack_pending: 4 * BATCH as i64,
        ..Default::default()
    }
}

/// What the loop needs.
pub struct Live {
    /// The projection.
    pub db: PgPool,
    /// For checkpoints.
    pub js: jetstream::Context,
    /// Settles messages (parks poison).
    pub supervisor: Supervisor,
    /// Marked stalled while the database is down.
    pub readiness: Readiness,
    /// Epoch and instance.
    pub origin: Origin,
    /// Batches whose checkpoints are being confirmed (bounded by [`CONFIRMING`]).
    pub confirming: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Most batches whose checkpoint acks are awaited at once.
pub const CONFIRMING: usize = 4;

/// Committed lanes waiting to be settled at most (the applying loop waits beyond).
const SETTLING: usize = 2 * LANES;

/// Transactions a batch is split into, by payment, committed at once: the database
/// works on two at a time instead of waiting for each statement's round trip.
const LANES: usize = 2;

/// The lane of a message: a hash of its payment, so one payment's versions are
/// always applied by one lane, in order.
fn lane_of(item: &Item) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    item.key().hash(&mut hasher);
    (hasher.finish() % LANES as u64) as usize
}

struct Received {
    message: jetstream::Message,
    delivered: i64,
    seq: u64,
}

/// One lane of a batch: its messages and what they decoded to.
type Lane = (Vec<Received>, Vec<(u64, Item)>);

/// A committed batch, for the settling loop.
struct Committed {
    batch: Vec<Received>,
    items: Vec<(u64, Item)>,
    result: project::BatchResult,
    started: std::time::Instant,
}

impl Live {
    /// Pulls and applies batches until `shutdown`. A committed batch is settled (its
    /// messages acknowledged, its checkpoints published) by a second loop, in commit
    /// order, while the next batch is applied: the database and the stream work at
    /// once instead of in turn.
    pub async fn run(&self, consumer: consumer::PullConsumer, shutdown: CancellationToken) {
        let (committed, mut to_settle) = tokio::sync::mpsc::channel::<Committed>(SETTLING);
        let settling = async {
            while let Some(c) = to_settle.recv().await {
                self.settle(&c.batch, &c.items, c.result, c.started).await;
            }
        };
        let applying = async move {
            self.apply_until(consumer, &shutdown, &committed).await;
            // `committed` drops here: the settling loop ends once it has settled the rest.
        };
        tokio::join!(applying, settling);
    }

    async fn apply_until(
        &self,
        consumer: consumer::PullConsumer,
        shutdown: &CancellationToken,
        committed: &tokio::sync::mpsc::Sender<Committed>,
    ) {
        // A chunk ends where the runtime's cooperative budget (128 polls) does, not
        // where the ready messages do: gather what is ready a little longer.
        let max = std::num::NonZeroUsize::new(BATCH).unwrap_or(std::num::NonZeroUsize::MIN);
        paytrack_nats::pull_batches(consumer, shutdown, max, GATHER, |received| {
            self.handle(received, shutdown, committed)
        })
        .await;
    }

    async fn handle(
        &self,
        messages: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
        committed: &tokio::sync::mpsc::Sender<Committed>,
    ) {
        let mut batch = Vec::with_capacity(messages.len());
        let mut items = Vec::with_capacity(messages.len());
        for message in messages {
            let Ok(info) = message.info() else {
                self.supervisor
                    .settle(
                        &message,
                        1,
                        Err(HandleError::poison("read JetStream metadata", "no metadata")),
                    )
                    .await;
                continue;
            };
            let (seq, delivered) = (info.stream_sequence, info.delivered);
            match Item::decode(&message.subject, &message.payload) {
                Ok(item) => {
                    items.push((seq, item));
                    batch.push(Received {
                        message,
                        delivered,
                        seq,
                    });
                }
                Err(error) => {
                    self.supervisor
                        .settle(&message, delivered, Err(HandleError::poison("open the message", error)))
                        .await;
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        // Each lane is one transaction of the batch's payments that hash to it: the
        // lanes commit at once on their own connections, one payment stays in one lane.
        let mut lanes: Vec<Lane> = (0..LANES).map(|_| Default::default()).collect();
        for (received, item) in batch.into_iter().zip(items) {
            let lane = &mut lanes[lane_of(&item.1)];
            lane.0.push(received);
            lane.1.push(item);
        }
        futures::future::join_all(
            lanes
                .into_iter()
                .filter(|(batch, _)| !batch.is_empty())
                .map(|(batch, items)| self.apply_lane(batch, items, shutdown, committed)),
        )
        .await;
    }

    /// Applies one lane of a batch in one transaction and queues it for settling; a
    /// lane the database refuses is applied again one message at a time.
    async fn apply_lane(
        &self,
        batch: Vec<Received>,
        items: Vec<(u64, Item)>,
        shutdown: &CancellationToken,
        committed: &tokio::sync::mpsc::Sender<Committed>,
    ) {
        let started = std::time::Instant::now();
        match self.apply_or_wait(&batch, &items, shutdown).await {
            Some(Ok(result)) => {
                let _ = committed
                    .send(Committed {
                        batch,
                        items,
                        result,
                        started,
                    })
                    .await;
            }
            Some(Err(error)) if batch.len() == 1 => {
                let received = &batch[0];
                self.supervisor
                    .settle(&received.message, received.delivered, Err(poison(error)))
                    .await;
            }
            Some(Err(error)) => {
                // The database refused something in the batch: apply one by one, so
                // only the message it refuses is parked.
                tracing::warn!(%error, size = batch.len(), "batch refused; applying its messages one by one");
                for (received, item) in batch.into_iter().zip(items) {
                    let one = vec![received];
                    let item = vec![item];
                    match self.apply_or_wait(&one, &item, shutdown).await {
                        Some(Ok(result)) => {
                            let _ = committed
                                .send(Committed {
                                    batch: one,
                                    items: item,
                                    result,
                                    started: std::time::Instant::now(),
                                })
                                .await;
                        }
                        Some(Err(error)) => {
                            self.supervisor
                                .settle(&one[0].message, one[0].delivered, Err(poison(error)))
                                .await;
                        }
                        None => return,
                    }
                }
            }
            None => {
                // Shutting down mid-wait: hand the batch back at once.
                for received in &batch {
                    let _ = received.message.ack_with(AckKind::Nak(None)).await;
                }
            }
        }
    }

    /// Applies the batch, waiting out database failures (stalled, messages kept in
    /// progress); `None` on shutdown, `Err` when the database refuses the data.
    async fn apply_or_wait(
        &self,
        batch: &[Received],
        items: &[(u64, Item)],
        shutdown: &CancellationToken,
    ) -> Option<Result<project::BatchResult, BatchError>> {
        let mut delay = Duration::from_millis(200);
        let mut failures = 0u32;
        loop {
            // A panic while applying is the data's doing (no retry changes it): it is
            // a refusal, so the batch is applied one by one and the message parked.
            let applied = paytrack_nats::catch_panic(project::apply_batch(&self.db, &self.origin, items))
                .await
                .unwrap_or_else(|panicked| Err(BatchError::Panicked(panicked)));
            match applied {
                Ok(result) => {
                    if failures > 0 {
                        tracing::info!(failures, "the database is back; projecting again");
                        self.readiness
                            .set_consumer_stalled(paytrack_nats::CONSUMER_PROJECTOR_STATUS, false);
                    }
                    return Some(Ok(result));
                }
                Err(error) if refused(&error) => return Some(Err(error)),
                Err(error) => {
                    failures += 1;
                    self.readiness
                        .set_consumer_stalled(paytrack_nats::CONSUMER_PROJECTOR_STATUS, true);
                    metrics::counter!("paytrack_projector_batch_failures_total").increment(1);
                    tracing::warn!(%error, failures, ?delay, "cannot apply the batch; holding it and retrying");
                    for received in batch {
                        let _ = received.message.ack_with(AckKind::Progress).await;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn settle(
        &self,
        batch: &[Received],
        items: &[(u64, Item)],
        result: project::BatchResult,
        started: std::time::Instant,
    ) {
        let mut new = 0u64;
        for ((received, (_, item)), applied) in batch.iter().zip(items).zip(&result.applied) {
            match applied {
                Applied::Deferred if received.delivered >= DEFER_DELIVERIES => {
                    self.supervisor
                        .settle(
                            &received.message,
                            received.delivered,
                            Err(HandleError::transient(
                                "apply a transition",
                                "its previous version is still not in the projection",
                            )),
                        )
                        .await;
                }
                Applied::Deferred => {
                    if let Item::Transition(t) = item {
                        tracing::debug!(payment_id = %t.payment_id, version = t.version, seq = received.seq, "deferred until its previous version is applied");
                    }
                    let _ = received.message.ack_with(AckKind::Nak(Some(DEFER_DELAY))).await;
                }
                Applied::New | Applied::Duplicate | Applied::Observed => {
                    if let (Applied::New, Item::Transition(t)) = (applied, item) {
                        new += 1;
                        // One span and line per transition only when logged at debug
                        // or exported: at thousands a second they cost more than
                        // projecting it. The trace id is kept with the transition
                        // (timeline, checkpoints' traceparent) either way.
                        if tracing::enabled!(tracing::Level::DEBUG) || telemetry::exports_traces() {
                            trace_projected(t, received, &result.due);
                        }
                    }
                    self.supervisor
                        .settle(&received.message, received.delivered, Ok(()))
                        .await;
                }
            }
        }
        metrics::counter!("paytrack_projector_transitions_total").increment(new);
        metrics::histogram!("paytrack_projector_batch_seconds").record(started.elapsed().as_secs_f64());
        // Send now (in order), confirm in the background: the next batch need not wait
        // for this one's acks; at most `CONFIRMING` batches' acks are awaited at once.
        let due = result.due.len();
        let sent = crate::outbox::send_all(&self.js, result.due).await;
        if let Ok(permit) = self.confirming.clone().acquire_owned().await {
            let db = self.db.clone();
            tokio::spawn(async move {
                crate::outbox::confirm(&db, sent).await;
                drop(permit);
            });
        }
        let (first_seq, last_seq) = (
            batch.first().map(|r| r.seq).unwrap_or_default(),
            batch.last().map(|r| r.seq).unwrap_or_default(),
        );
        let elapsed_ms = started.elapsed().as_millis() as u64;
        // One line per batch that applied something (a batch of duplicates only is
        // debug); the transitions' own lines are debug (above).
        if new > 0 {
            tracing::info!(
                size = batch.len(),
                new,
                due,
                first_seq,
                last_seq,
                elapsed_ms,
                "batch projected"
            );
        } else {
            tracing::debug!(size = batch.len(), first_seq, last_seq, elapsed_ms, "batch projected");
        }
    }
}

/// Whether the database refused the data itself (SQLSTATE class 22 or 23), which no
/// retry changes, as opposed to being unavailable.
fn refused(error: &BatchError) -> bool {
    match error {
        BatchError::Range(_) | BatchError::Panicked(_) => true,
        BatchError::Database(e) => {
            let code = e.as_database_error().and_then(|e| e.code()).unwrap_or_default();
            code.starts_with("22") || code.starts_with("23")
        }
    }
}

fn poison(error: BatchError) -> HandleError {
    HandleError::poison("the database refused the transition", error)
}

/// The `project` span of a newly persisted transition, a child of the span that
/// appended it (its message's `traceparent`), and under it one `checkpoint` span per
/// checkpoint the version owes, with the very context the checkpoint message carries:
/// the edge's delivery of a checkpoint continues a span the trace holds.
fn trace_projected(t: &Transition, received: &Received, due: &[Due]) {
    let span = tracing::info_span!(
        "project",
        tenant = %t.tenant,
        payment_id = %t.payment_id,
        version = t.version,
        trace_id = %t.trace_id,
    );
    if let Some(headers) = &received.message.headers {
        telemetry::continue_from(&span, &NatsHeaders(headers));
    }
    span.in_scope(|| {
        tracing::debug!(status = %t.status, version = t.version, seq = received.seq, "transition persisted");
    });
    let owed = due
        .iter()
        .find(|d| d.version == t.version && d.payment_id == t.payment_id && d.tenant == t.tenant);
    for (kind, traceparent) in owed.map(Due::traceparents).unwrap_or_default() {
        telemetry::record_span_as("checkpoint", &traceparent, &span, &[("checkpoint", kind.as_str())]);
    }
}
