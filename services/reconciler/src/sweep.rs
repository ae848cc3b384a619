//! Stuck-payment sweeps: a periodic scan of a JetStream KV bucket holding one entry
//! per payment whose status is not yet settled and persisted.
//!
//! The reconciler writes the entry after each transition it appends (newest version
//! wins, by compare-and-set). Every replica follows the bucket with one watch (a
//! fixed cost: one ordered consumer) into an in-memory index, and scans that index
//! every `reconciler_sweep_interval_ms`: a scan costs JetStream nothing for the
//! payments that need nothing now, however many are tracked. Each action on an
//! entry first wins a compare-and-set on the entry's revision, so two replicas
//! never both query the provider for the same check (the revision is the lease).
//! What an entry needs is decided by [`plan`], a pure function of the entry, the
//! clock and the model:
//! - no `persisted` checkpoint for its version after `reconciler_trace_gap_ms`:
//!   a `trace_gap` alert;
//! - still `initiated`/`pending`/`held` past its rail's window: a status query to
//!   the provider (the rail's `max_checks`, `interval_secs` apart), whose
//!   answer is published on PAYTRACK_IN as a `status_query` fact and decided like
//!   any other;
//! - checks exhausted and still not settled: an `unclear_pending` alert, and
//!   the checks go on, the interval doubling up to 64 times (the provider keeps
//!   the truth, and a webhook it lost must not leave the payment pending);
//! - settled and persisted: the entry is removed.
//!
//! A payment that never settles stays tracked, so each tenant may have at most
//! `reconciler_sweep_max_per_tenant` payments tracked: past it a new payment is not
//! tracked (no status query, no `trace_gap`), and a `sweep_quota` alert (at most one
//! per tenant and hour per replica) and `paytrack_sweep_quota_refused_total` say so.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use async_nats::jetstream::{self, kv, stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use paytrack_shared::envelope::{
    self, Checkpoint, CheckpointKind, Direction, ENVELOPE_VERSION, FactSource, InboundFact, ProviderEvent, RawEvidence,
    Transition,
};
use paytrack_shared::{MerchantId, PaymentId, Status, StatusModel, TenantId, msg_id, subjects};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::alerts;

/// How often the sweep's watch checks that the bucket did not go back.
const BUCKET_CHECK: Duration = Duration::from_secs(5);

/// The sweep's settings.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Time between scans.
    pub interval: Duration,
    /// Divides every rail window and check interval (1 in production).
    pub window_divisor: u32,
    /// How long a transition may wait for its `persisted` checkpoint.
    pub trace_gap: Duration,
    /// Status-query base URL per provider.
    pub status_query_urls: BTreeMap<String, String>,
    /// How long one status query may take.
    pub query_timeout: Duration,
    /// The bearer token the status-query gateways require (`simulator_token`).
    pub gateway_token: Option<secrecy::SecretString>,
    /// Most payments one tenant may have tracked at once.
    pub max_per_tenant: usize,
}

impl SweepConfig {
    /// Parses `provider=url,...`; malformed pairs are skipped with a warning.
    pub fn parse_urls(raw: &str) -> BTreeMap<String, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .filter_map(|pair| match pair.split_once('=') {
                Some((provider, url)) => {
                    Some((provider.trim().to_owned(), url.trim().trim_end_matches('/').to_owned()))
                }
                None => {
                    tracing::warn!(pair, "reconciler_status_query_urls: expected provider=url");
                    None
                }
            })
            .collect()
    }

    fn scaled(&self, secs: u64) -> chrono::Duration {
        let ms = secs.saturating_mul(1000) / u64::from(self.window_divisor.max(1));
        chrono::Duration::try_milliseconds(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or(chrono::Duration::MAX)
    }
}

/// One tracked payment, the value of key `<tenant>.<payment>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Tenant.
    pub tenant: TenantId,
    /// Payment.
    pub payment_id: PaymentId,
    /// Merchant (the subject of its checkpoints).
    pub merchant_id: MerchantId,
    /// The newest version appended.
    pub version: u64,
    /// Its status.
    pub status: Status,
    /// The rail, when known.
    pub rail: Option<String>,
    /// The provider, when known.
    pub provider: Option<String>,
    /// The provider's reference, when known.
    pub provider_ref: Option<String>,
    /// When the payment's first tracked transition was recorded.
    pub since: DateTime<Utc>,
    /// When the newest version was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Status queries made so far.
    pub checks: u32,
    /// No query before this.
    pub next_check_at: Option<DateTime<Utc>>,
    /// Whether the newest version's `persisted` checkpoint was seen.
    pub persisted: bool,
    /// Whether `trace_gap` was raised for the newest version.
    pub trace_gap_raised: bool,
    /// Whether `unclear_pending` was raised for the current status.
    pub unclear_raised: bool,
    /// The trace of the newest version.
    pub trace_id: String,
}

impl Entry {
    /// The entry after `t` was appended, keeping what `known` learnt.
    pub fn after(known: Option<&Entry>, t: &Transition) -> Entry {
        let same_status = known.is_some_and(|k| k.status == t.status);
        Entry {
            tenant: t.tenant.clone(),
            payment_id: t.payment_id.clone(),
            merchant_id: t.merchant_id.clone(),
            version: t.version,
            status: t.status,
            rail: t.terms.rail.clone(),
            provider: t.terms.provider.clone(),
            provider_ref: t.terms.provider_ref.clone(),
            since: known.map_or(t.recorded_at, |k| k.since),
            recorded_at: t.recorded_at,
            checks: known.map_or(0, |k| k.checks),
            next_check_at: known.and_then(|k| k.next_check_at),
            persisted: false,
            trace_gap_raised: false,
            unclear_raised: same_status && known.is_some_and(|k| k.unclear_raised),
            trace_id: t.trace_id.clone(),
        }
    }
}

fn key(tenant: &TenantId, payment: &PaymentId) -> String {
    format!("{tenant}.{payment}")
}

/// What a scan does with one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Look for the newest version's `persisted` checkpoint.
    pub look_for_checkpoint: bool,
    /// Raise `trace_gap` (if the checkpoint is still missing).
    pub trace_gap: bool,
    /// Make status query number `checks + 1`.
    pub query: bool,
    /// Raise `unclear_pending`.
    pub unclear: bool,
    /// Remove the entry: settled and persisted.
    pub forget: bool,
}

/// Whether a status still waits for the provider.
pub fn unsettled(status: Status) -> bool {
    matches!(status, Status::Initiated | Status::Pending | Status::Held)
}

/// Whether `newest`, the newest checkpoint of a payment's subject, shows `version`
/// persisted: every checkpoint kind is published after its version's `persisted`.
pub fn proves_persisted(newest: &Checkpoint, version: u64) -> bool {
    match newest.checkpoint {
        CheckpointKind::Persisted | CheckpointKind::LedgerPosted | CheckpointKind::ReturnWindowClosed => {
            newest.version >= version
        }
    }
}

/// What `entry` needs at `now`: pure, so every rule is tested without a clock.
pub fn plan(entry: &Entry, now: DateTime<Utc>, model: &StatusModel, config: &SweepConfig) -> Plan {
    let rules = model.rail(entry.rail.as_deref());
    let checks = &rules.status_checks;
    let gap = chrono::Duration::from_std(config.trace_gap).unwrap_or(chrono::Duration::MAX);
    // A first check beyond the representable dates is never due.
    let first = entry
        .since
        .checked_add_signed(config.scaled(rules.pending_window_secs.max(checks.first_after_secs)));
    let due = unsettled(entry.status)
        && first.is_some_and(|first| now >= first)
        && entry.next_check_at.is_none_or(|t| now >= t);
    let gap_passed = now - entry.recorded_at > gap;
    Plan {
        // The checkpoint matters to forget a settled payment, or to tell a trace gap
        // once the gap has passed; an unsettled payment inside the gap needs no read.
        look_for_checkpoint: !entry.persisted && (!unsettled(entry.status) || (gap_passed && !entry.trace_gap_raised)),
        trace_gap: !entry.persisted && !entry.trace_gap_raised && gap_passed,
        // Once `unclear_pending` is raised the provider is still asked, ever less often.
        query: due && (entry.checks < checks.max_checks || entry.unclear_raised),
        unclear: due && entry.checks >= checks.max_checks && !entry.unclear_raised,
        forget: !unsettled(entry.status) && entry.persisted,
    }
}

/// Each tracked payment's entry and revision as this replica's watch last saw them
/// (what a scan reads), and how many each tenant has (what its quota is held to).
#[derive(Default)]
struct Index {
    entries: HashMap<String, (Entry, u64)>,
    per_tenant: HashMap<String, usize>,
}

/// The tenant token of a key `<tenant>.<payment>`.
fn tenant_of(key: &str) -> &str {
    key.split_once('.').map_or(key, |(tenant, _)| tenant)
}

impl Index {
    fn clear(&mut self) {
        self.entries.clear();
        self.per_tenant.clear();
    }

    fn insert(&mut self, key: &str, entry: Entry, revision: u64) {
        if self.entries.insert(key.to_owned(), (entry, revision)).is_none() {
            *self.per_tenant.entry(tenant_of(key).to_owned()).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            let tenant = tenant_of(key);
            if let Some(n) = self.per_tenant.get_mut(tenant) {
                // Kept at zero, so the tenant's gauge falls to 0 too.
                *n = n.saturating_sub(1);
            }
        }
    }

    fn tracked(&self, tenant: &TenantId) -> usize {
        self.per_tenant.get(tenant.as_str()).copied().unwrap_or(0)
    }
}

/// The least time between two `sweep_quota` alerts of one tenant (per replica).
const QUOTA_ALERT_EVERY: Duration = Duration::from_secs(3600);

/// The sweep's bucket and what it needs to act.
pub struct Sweeps {
    index: std::sync::Mutex<Index>,
    /// When each tenant's `sweep_quota` alert was last raised by this replica.
    quota_alerted: std::sync::Mutex<HashMap<TenantId, tokio::time::Instant>>,
    store: kv::Store,
    js: jetstream::Context,
    status: stream::Stream,
    http: reqwest::Client,
    config: SweepConfig,
}

/// Why the sweep's bucket cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("sweep bucket: {0}")]
pub struct SweepError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// How many times a compare-and-set is retried against another writer.
const CAS_ATTEMPTS: usize = 5;

impl Sweeps {
    /// Opens the bucket (the layout step creates it).
    pub async fn open(js: &jetstream::Context, config: SweepConfig) -> Result<Arc<Sweeps>, SweepError> {
        let store = paytrack_nats::open_bucket(js, subjects::SWEEP_BUCKET)
            .await
            .map_err(|e| SweepError(e.into()))?;
        let status = js
            .get_stream(subjects::STREAM_STATUS)
            .await
            .map_err(|e| SweepError(e.into()))?;
        let http = reqwest::Client::builder()
            .timeout(config.query_timeout)
            .default_headers(paytrack_shared::auth::gateway_headers(config.gateway_token.as_ref()))
            .build()
            .map_err(|e| SweepError(e.into()))?;
        Ok(Arc::new(Sweeps {
            index: std::sync::Mutex::new(Index::default()),
            quota_alerted: std::sync::Mutex::new(HashMap::new()),
            store,
            js: js.clone(),
            status,
            http,
            config,
        }))
    }

    /// Records that `t` was appended: the entry moves to its version unless a newer
    /// one is already there.
    pub async fn track(&self, t: &Transition) -> Result<(), SweepError> {
        let key = key(&t.tenant, &t.payment_id);
        let at_quota = || self.with_index(|index| index.tracked(&t.tenant)) >= self.config.max_per_tenant;
        if t.version == 1 && at_quota() {
            return self.refuse(t).await;
        }
        if t.version == 1 {
            // A new payment has no entry yet: create it without reading first (one
            // round trip); if one exists after all, the loop below settles it.
            let value = bytes::Bytes::from(serde_json::to_vec(&Entry::after(None, t)).unwrap_or_default());
            if self.store.create(&key, value).await.is_ok() {
                return Ok(());
            }
        }
        for _ in 0..CAS_ATTEMPTS {
            let current = self.store.entry(&key).await.map_err(|e| SweepError(e.into()))?;
            let known = current
                .as_ref()
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| serde_json::from_slice::<Entry>(&e.value).ok());
            if known.as_ref().is_some_and(|k| k.version >= t.version) {
                return Ok(());
            }
            if known.is_none() && at_quota() {
                return self.refuse(t).await;
            }
            let next = Entry::after(known.as_ref(), t);
            let value = bytes::Bytes::from(serde_json::to_vec(&next).unwrap_or_default());
            let written = match &current {
                Some(e) => self.store.update(&key, value, e.revision).await.map(drop).is_ok(),
                None => self.store.create(&key, value).await.map(drop).is_ok(),
            };
            if written {
                return Ok(());
            }
        }
        Err(SweepError("another writer kept updating the entry".into()))
    }

    /// Leaves `t`'s payment untracked because its tenant has its quota of tracked
    /// payments: counted, and alerted at most once per [`QUOTA_ALERT_EVERY`].
    async fn refuse(&self, t: &Transition) -> Result<(), SweepError> {
        let quota = self.config.max_per_tenant;
        metrics::counter!("paytrack_sweep_quota_refused_total", "tenant" => t.tenant.to_string()).increment(1);
        let now = tokio::time::Instant::now();
        let due = {
            let mut alerted = self
                .quota_alerted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = alerted
                .get(&t.tenant)
                .is_none_or(|at| now.duration_since(*at) >= QUOTA_ALERT_EVERY);
            if due {
                alerted.insert(t.tenant.clone(), now);
            }
            due
        };
        tracing::warn!(
            tenant = %t.tenant,
            payment_id = %t.payment_id,
            trace_id = %t.trace_id,
            quota,
            "the tenant has its quota of swept payments; this payment is not swept"
        );
        if !due {
            return Ok(());
        }
        let entry = Entry::after(None, t);
        let detail = format!(
            "the tenant has {quota} payments waiting to settle (reconciler_sweep_max_per_tenant); \
             this payment and later ones are not swept (no status query, no trace_gap) until some settle"
        );
        let discriminator = format!("{}", Utc::now().format("%Y%m%d%H"));
        self.raise(&entry, subjects::ALERT_SWEEP_QUOTA, &discriminator, detail)
            .await
    }

    /// Follows the bucket and scans every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let follow = self.follow(shutdown.clone());
        let scans = async {
            let mut tick = tokio::time::interval(self.config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                self.scan().await;
            }
        };
        tokio::join!(follow, scans);
    }

    /// Keeps the index equal to the bucket: every entry's newest value, then each
    /// change as it is written (by any replica). After a lost watch the index is
    /// reloaded from scratch, so a removal missed meanwhile cannot linger.
    async fn follow(&self, shutdown: CancellationToken) {
        let retry = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            let mut watch = match self.store.watch_with_history(">").await {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the sweep bucket; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(retry) => continue,
                    }
                }
            };
            // A watch lost to a broker restart: what the bucket lost meanwhile is
            // written back before the index is reloaded from the bucket.
            self.restore_if_went_back().await;
            self.with_index(Index::clear);
            let mut went_back = tokio::time::interval(BUCKET_CHECK);
            went_back.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = watch.next() => next,
                    _ = went_back.tick() => {
                        if self.restore_if_went_back().await {
                            break;
                        }
                        continue;
                    }
                };
                match next {
                    Some(Ok(change)) => self.learn(change),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "sweep bucket watch failed; watching again");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// When the bucket went back ([`Sweeps::bucket_went_back`]), writes back from the
    /// index every tracked payment the bucket lost; whether it went back.
    async fn restore_if_went_back(&self) -> bool {
        if !self.bucket_went_back().await {
            return false;
        }
        let tracked: Vec<(String, Entry)> = self.with_index(|index| {
            index
                .entries
                .iter()
                .map(|(key, (entry, _))| (key.clone(), entry.clone()))
                .collect()
        });
        for (key, entry) in tracked {
            self.resync(&key, &entry).await;
        }
        true
    }

    /// Whether the bucket's last revision is below one the index holds: the broker
    /// lost the bucket's unsynced tail (a power loss) and gives those revisions out
    /// again, which a running watch would skip. Every tracked payment the bucket lost
    /// is then written back and the index reloaded.
    async fn bucket_went_back(&self) -> bool {
        let newest_known = self.with_index(|index| index.entries.values().map(|(_, revision)| *revision).max());
        let Some(newest_known) = newest_known else {
            return false;
        };
        // Fresh stream info: the bucket handle's status is what it read when opened.
        match paytrack_nats::get_stream(&self.js, subjects::STREAM_SWEEP).await {
            Ok(stream) if stream.cached_info().state.last_sequence < newest_known => {
                tracing::warn!(
                    newest_known,
                    bucket_last = stream.cached_info().state.last_sequence,
                    "the sweep bucket went back; watching it again from its start"
                );
                true
            }
            _ => false,
        }
    }

    /// Applies one change of the bucket to the index.
    fn learn(&self, change: kv::Entry) {
        if change.operation != kv::Operation::Put {
            self.with_index(|index| index.remove(&change.key));
            return;
        }
        match serde_json::from_slice::<Entry>(&change.value) {
            Ok(entry) => self.remember(&change.key, entry, change.revision),
            Err(_) => {
                tracing::warn!(key = change.key, "unreadable sweep entry; removing it");
                self.with_index(|index| index.remove(&change.key));
                let store = self.store.clone();
                tokio::spawn(async move {
                    let _ = store.purge(change.key).await;
                });
            }
        }
    }

    /// Records `entry` at `revision` unless the index already knows a newer revision
    /// (this replica's own write may come back through the watch after a newer one).
    fn remember(&self, key: &str, entry: Entry, revision: u64) {
        self.with_index(|index| {
            if index.entries.get(key).is_none_or(|(_, known)| *known <= revision) {
                index.insert(key, entry, revision);
            }
        });
    }

    fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        // A panic while holding the lock leaves a map that is still consistent.
        let mut index = self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut index)
    }

    /// Acts on every indexed entry whose plan has something to do now; the rest
    /// cost nothing.
    async fn scan(&self) {
        let now = Utc::now();
        let model = StatusModel::get();
        let (tracked, per_tenant, due) = self.with_index(|index| {
            let due: Vec<(String, Entry, u64)> = index
                .entries
                .iter()
                .filter(|(_, (entry, _))| plan(entry, now, model, &self.config) != Plan::default())
                .map(|(key, (entry, revision))| (key.clone(), entry.clone(), *revision))
                .collect();
            let per_tenant: Vec<(String, usize)> = index.per_tenant.iter().map(|(t, n)| (t.clone(), *n)).collect();
            (index.entries.len(), per_tenant, due)
        });
        metrics::gauge!("paytrack_sweep_tracked").set(tracked as f64);
        for (tenant, n) in per_tenant {
            metrics::gauge!("paytrack_sweep_tracked_by_tenant", "tenant" => tenant).set(n as f64);
        }
        for (key, entry, revision) in due {
            if let Err(e) = self.sweep_one(&key, entry, revision).await {
                tracing::warn!(key, error = %e, "sweeping a payment failed");
            }
        }
    }

    /// Does what `entry` (at `revision`) needs; a write that loses its
    /// compare-and-set means another writer moved first, and the watch brings the
    /// newer entry for the next scan.
    async fn sweep_one(&self, key: &str, mut entry: Entry, mut revision: u64) -> Result<(), SweepError> {
        let now = Utc::now();
        let model = StatusModel::get();
        let mut plan = plan(&entry, now, model, &self.config);
        if plan.look_for_checkpoint && self.persisted(&entry).await? {
            entry.persisted = true;
            let Some(r) = self.write(key, &entry, revision).await else {
                return Ok(());
            };
            revision = r;
            plan = self::plan(&entry, now, model, &self.config);
        }
        if plan.trace_gap {
            let detail = format!(
                "version {} ({}) has no persisted checkpoint {} ms after it was recorded",
                entry.version,
                entry.status,
                self.config.trace_gap.as_millis()
            );
            self.raise(&entry, subjects::ALERT_TRACE_GAP, &entry.version.to_string(), detail)
                .await?;
            entry.trace_gap_raised = true;
            let Some(r) = self.write(key, &entry, revision).await else {
                return Ok(());
            };
            revision = r;
        }
        if plan.unclear {
            let detail = format!(
                "{} past its rail's window after {} status checks; the provider cannot confirm it",
                entry.status, entry.checks
            );
            let discriminator = format!("{}:{}", entry.version, entry.status);
            self.raise(&entry, subjects::ALERT_UNCLEAR_PENDING, &discriminator, detail)
                .await?;
            entry.unclear_raised = true;
            self.write(key, &entry, revision).await;
            return Ok(());
        }
        if plan.query {
            // The claim: whoever updates the revision first makes this check.
            let rules = model.rail(entry.rail.as_deref());
            entry.checks += 1;
            let interval = self.config.scaled(rules.status_checks.interval_after(entry.checks));
            entry.next_check_at = Some(now.checked_add_signed(interval).unwrap_or(DateTime::<Utc>::MAX_UTC));
            if self.write(key, &entry, revision).await.is_none() {
                return Ok(());
            }
            self.query(&entry).await;
            return Ok(());
        }
        if plan.forget {
            // Only if nobody wrote since: a newer version keeps its entry.
            let _ = self.store.delete_expect_revision(key, Some(revision)).await;
        }
        Ok(())
    }

    /// Writes `entry` if the revision is still `revision`; the new revision.
    async fn write(&self, key: &str, entry: &Entry, revision: u64) -> Option<u64> {
        let value = bytes::Bytes::from(serde_json::to_vec(entry).unwrap_or_default());
        let Ok(written) = self.store.update(key, value, revision).await else {
            self.resync(key, entry).await;
            return None;
        };
        // The watch brings this write too; recording it now keeps the next scan from
        // acting on the revision just replaced.
        self.remember(key, entry.clone(), written);
        Some(written)
    }

    /// After a compare-and-set that failed: takes the bucket's current entry into the
    /// index even when its revision is lower than the one the index knows, or writes
    /// `entry` again when the bucket no longer holds the key. A broker that lost its
    /// unsynced tail (a power loss) cuts the bucket back and gives its revisions out
    /// again; the index, which ignores older revisions, would otherwise keep the lost
    /// entry and its revision, every write would fail on it, and the payment would
    /// never be queried again.
    async fn resync(&self, key: &str, entry: &Entry) {
        let current = match self.store.entry(key).await {
            Ok(current) => current,
            Err(error) => {
                tracing::debug!(%error, key, "sweep entry not re-read after a failed write");
                return;
            }
        };
        match current {
            Some(current) if current.operation == kv::Operation::Put => {
                let known = self.with_index(|index| index.entries.get(key).map(|(_, revision)| *revision));
                if known.is_some_and(|known| current.revision < known)
                    && let Ok(stored) = serde_json::from_slice::<Entry>(&current.value)
                {
                    tracing::warn!(
                        key,
                        known,
                        bucket = current.revision,
                        "the sweep bucket went back; re-indexed"
                    );
                    self.with_index(|index| index.insert(key, stored, current.revision));
                }
            }
            _ => {
                let value = bytes::Bytes::from(serde_json::to_vec(entry).unwrap_or_default());
                if let Ok(revision) = self.store.create(key, value).await {
                    tracing::warn!(key, revision, "the sweep bucket lost a tracked payment; written again");
                    self.with_index(|index| index.insert(key, entry.clone(), revision));
                }
            }
        }
    }

    /// Whether the entry's version is persisted: the subject's newest checkpoint is
    /// of that version or a later one, whatever its kind. The projector publishes a
    /// version's `persisted` before its `ledger_posted` (and `return_window_closed`
    /// after both), so the newest checkpoint is rarely `persisted` itself: asking for
    /// that kind kept every settled payment in the sweep and raised a `trace_gap` for
    /// each once the gap had passed.
    async fn persisted(&self, entry: &Entry) -> Result<bool, SweepError> {
        let subject = subjects::checkpoint(&entry.tenant, &entry.merchant_id, &entry.payment_id);
        let last = paytrack_nats::last_message(&self.status, &subject)
            .await
            .map_err(|e| SweepError(e.into()))?;
        Ok(last
            .and_then(|m| envelope::decode::<Checkpoint>(&m.payload).ok())
            .is_some_and(|c| proves_persisted(&c, entry.version)))
    }

    async fn raise(&self, entry: &Entry, kind: &str, discriminator: &str, detail: String) -> Result<(), SweepError> {
        tracing::warn!(
            tenant = %entry.tenant,
            payment_id = %entry.payment_id,
            kind,
            %detail,
            "alert raised"
        );
        alerts::raise(
            &self.js,
            alerts::Raise {
                tenant: &entry.tenant,
                payment: &entry.payment_id,
                merchant: Some(&entry.merchant_id),
                kind,
                discriminator,
                detail,
                trace_id: &entry.trace_id,
            },
        )
        .await
        .map_err(|e| SweepError(e.into()))
    }

    /// Asks the provider; its answer becomes a `status_query` fact on PAYTRACK_IN.
    /// No answer is logged: the check is spent, and once all are spent the payment
    /// raises `unclear_pending`.
    async fn query(&self, entry: &Entry) {
        let span = tracing::info_span!(
            "status_query",
            tenant = %entry.tenant,
            payment_id = %entry.payment_id,
            check = entry.checks
        );
        // Instrumented, never entered across an await: a guard held over a suspension
        // leaves the span entered on whatever task the worker thread runs next.
        self.query_in_span(entry).instrument(span).await;
    }

    async fn query_in_span(&self, entry: &Entry) {
        let (Some(provider), Some(provider_ref)) = (&entry.provider, &entry.provider_ref) else {
            tracing::info!("no provider reference to query");
            return;
        };
        let Some(base) = self.config.status_query_urls.get(provider) else {
            tracing::info!(provider, "no status-query URL configured for the provider");
            return;
        };
        let url = format!("{base}/v1/providers/{provider}/payments/{provider_ref}");
        let answer = async {
            let response = self.http.get(&url).send().await?.error_for_status()?;
            response.text().await
        }
        .await;
        let body = match answer {
            Ok(body) => body,
            Err(e) => {
                metrics::counter!("paytrack_reconciler_status_queries_total", "result" => "no_answer").increment(1);
                tracing::warn!(provider, error = %e, "the provider's status query did not answer");
                return;
            }
        };
        let Ok(parsed) = serde_json::from_str::<QueryAnswer>(&body) else {
            metrics::counter!("paytrack_reconciler_status_queries_total", "result" => "unreadable").increment(1);
            tracing::warn!(provider, "the provider's status-query answer is unreadable");
            return;
        };
        metrics::counter!("paytrack_reconciler_status_queries_total", "result" => "answered").increment(1);
        let fact = InboundFact {
            v: ENVELOPE_VERSION,
            fact_id: msg_id::status_query_fact_id(provider, &entry.payment_id, entry.checks),
            tenant: entry.tenant.clone(),
            payment_id: entry.payment_id.clone(),
            merchant_id: Some(entry.merchant_id.clone()),
            received_at: Utc::now(),
            source: FactSource::StatusQuery(ProviderEvent {
                occurred_at: parsed.occurred_at,
                provider_ref: Some(provider_ref.clone()),
                // A negative amount is no amount: left unknown, as when the answer omits it.
                amount_minor: parsed.amount_minor.filter(|amount| *amount >= 0),
                currency: parsed.currency,
                reason: parsed.reason,
                provider_seq: parsed.provider_seq,
                direction: parsed.payout.and_then(|payout| payout.then_some(Direction::Payout)),
                status: Some(parsed.status.clone()),
                rail: parsed.rail,
                ..ProviderEvent::new(
                    provider.clone(),
                    format!("check-{}", entry.checks),
                    parsed.status.clone(),
                )
            }),
            raw: RawEvidence {
                headers: BTreeMap::from([("status-query-url".to_owned(), url.clone())]),
                body,
            },
        };
        let message = jetstream::message::PublishMessage::build()
            .message_id(msg_id::fact(&fact.tenant, &fact.fact_id))
            .payload(envelope::encode(&fact));
        let subject = subjects::inbound(&fact.tenant, &fact.payment_id);
        match async { self.js.send_publish(subject, message).await?.await }.await {
            Ok(_) => tracing::info!(fact_id = %fact.fact_id, "status-query answer recorded"),
            Err(e) => tracing::warn!(error = %e, "recording the status-query answer failed"),
        }
    }
}

/// The provider's status-query answer, as far as paytrack reads it. The payment's
/// terms it names (amount, currency, rail, whether it is a payout) complete the
/// terms of a history that lacks them (one whose create was never seen, or one the
/// broker lost and the answer begins again); they never overwrite known terms.
#[derive(Debug, Deserialize)]
struct QueryAnswer {
    status: String,
    #[serde(default)]
    amount_minor: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    rail: Option<String>,
    #[serde(default)]
    payout: Option<bool>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    provider_seq: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SweepConfig {
        SweepConfig {
            interval: Duration::from_millis(100),
            window_divisor: 1,
            trace_gap: Duration::from_secs(30),
            status_query_urls: BTreeMap::new(),
            query_timeout: Duration::from_secs(1),
            gateway_token: None,
            max_per_tenant: 100_000,
        }
    }

    fn entry(status: Status, rail: &str) -> Entry {
        let t0 = "2026-11-23T12:00:00Z".parse().unwrap();
        Entry {
            tenant: TenantId::new("t").unwrap(),
            payment_id: PaymentId::new("p").unwrap(),
            merchant_id: MerchantId::new("m").unwrap(),
            version: 1,
            status,
            rail: Some(rail.into()),
            provider: Some("sim".into()),
            provider_ref: Some("pr".into()),
            since: t0,
            recorded_at: t0,
            checks: 0,
            next_check_at: None,
            persisted: true,
            trace_gap_raised: false,
            unclear_raised: false,
            trace_id: String::new(),
        }
    }

    #[test]
    fn any_checkpoint_of_the_version_or_later_proves_it_persisted() {
        let checkpoint = |kind: CheckpointKind, version: u64| Checkpoint {
            v: ENVELOPE_VERSION,
            checkpoint: kind,
            tenant: TenantId::new("t").unwrap(),
            merchant_id: MerchantId::new("m").unwrap(),
            payment_id: PaymentId::new("p").unwrap(),
            version,
            status: Status::Succeeded,
            recorded_at: "2026-11-23T12:00:00Z".parse().unwrap(),
            trace_id: String::new(),
            is_final: false,
        };
        for kind in [
            CheckpointKind::Persisted,
            CheckpointKind::LedgerPosted,
            CheckpointKind::ReturnWindowClosed,
        ] {
            assert!(proves_persisted(&checkpoint(kind, 2), 2), "{kind:?} of the version");
            assert!(proves_persisted(&checkpoint(kind, 3), 2), "{kind:?} of a later version");
            assert!(
                !proves_persisted(&checkpoint(kind, 1), 2),
                "{kind:?} of an earlier version"
            );
        }
    }

    #[test]
    fn upi_is_checked_from_90_s_three_times_then_alerted_and_asked_ever_less_often() {
        let model = StatusModel::get();
        let c = config();
        let mut e = entry(Status::Pending, "upi");
        let at = |s: i64| e.since + chrono::Duration::seconds(s);
        assert!(!plan(&e, at(89), model, &c).query);
        assert!(plan(&e, at(90), model, &c).query);
        e.checks = 1;
        e.next_check_at = Some(at(180));
        assert!(!plan(&e, at(179), model, &c).query);
        assert!(plan(&e, at(180), model, &c).query);
        e.checks = 3;
        e.next_check_at = Some(at(360));
        let p = plan(&e, at(360), model, &c);
        assert!(!p.query && p.unclear, "{p:?}");
        e.unclear_raised = true;
        let p = plan(&e, at(400), model, &c);
        assert!(
            p.query && !p.unclear,
            "after the alert the provider is still asked: {p:?}"
        );
        e.checks = 4;
        e.next_check_at = Some(at(580));
        assert!(!plan(&e, at(579), model, &c).query);
        assert!(plan(&e, at(580), model, &c).query);
    }

    #[test]
    fn a_payment_dated_at_the_end_of_time_is_never_due_and_never_panics() {
        let model = StatusModel::get();
        let c = config();
        let mut e = entry(Status::Pending, "upi");
        e.since = DateTime::<Utc>::MAX_UTC;
        assert!(!plan(&e, DateTime::<Utc>::MAX_UTC, model, &c).query);
    }

    #[test]
    fn a_divisor_accelerates_every_window() {
        let model = StatusModel::get();
        let c = SweepConfig {
            window_divisor: 1000,
            ..config()
        };
        let e = entry(Status::Pending, "upi");
        assert!(!plan(&e, e.since + chrono::Duration::milliseconds(89), model, &c).query);
        assert!(plan(&e, e.since + chrono::Duration::milliseconds(90), model, &c).query);
    }

    #[test]
    fn settled_payments_are_forgotten_once_persisted_and_gaps_are_raised() {
        let model = StatusModel::get();
        let c = config();
        let mut e = entry(Status::Succeeded, "rtp");
        let later = e.since + chrono::Duration::days(1);
        assert_eq!(
            plan(&e, later, model, &c),
            Plan {
                forget: true,
                ..Plan::default()
            }
        );
        e.persisted = false;
        let p = plan(&e, e.recorded_at + chrono::Duration::seconds(31), model, &c);
        assert!(p.trace_gap && p.look_for_checkpoint && !p.forget);
        assert!(!plan(&e, e.recorded_at + chrono::Duration::seconds(29), model, &c).trace_gap);
    }

    #[test]
    fn an_unsettled_payment_inside_the_gap_needs_no_checkpoint_read() {
        let model = StatusModel::get();
        let c = config();
        let mut e = entry(Status::Pending, "card");
        e.persisted = false;
        let inside = plan(&e, e.recorded_at + chrono::Duration::seconds(29), model, &c);
        assert_eq!(inside, Plan::default(), "a scan costs nothing for it");
        let after = plan(&e, e.recorded_at + chrono::Duration::seconds(31), model, &c);
        assert!(after.look_for_checkpoint && after.trace_gap, "{after:?}");
        e.trace_gap_raised = true;
        assert!(!plan(&e, e.recorded_at + chrono::Duration::seconds(31), model, &c).look_for_checkpoint);
    }

    #[test]
    fn status_query_urls_are_parsed_per_provider() {
        let urls = SweepConfig::parse_urls("stdwebhooks=http://a:1/, razorpay=http://b ,junk");
        assert_eq!(urls.get("stdwebhooks").map(String::as_str), Some("http://a:1"));
        assert_eq!(urls.get("razorpay").map(String::as_str), Some("http://b"));
        assert_eq!(urls.len(), 2);
    }
}
