//! Where a subscription continues from: from memory when the ring holds what it
//! missed, otherwise after reading JetStream (the channel's latest position, the
//! stream's first sequence, a payment's snapshot); a backlog too large to queue at
//! once goes through the paged replay (`backlog.rs`).

use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::jetstream::stream::Stream;
use paytrack_shared::envelope::Position;
use paytrack_shared::subjects;
use serde_json::{Value, json};

use super::backlog::Backlog;
use super::channels::{Entry, attach, attach_in, detach_locked, matches};
use super::feed::{Feed, deliver_one};
use super::hub::{Hub, Inner, Ready, Request, Sub, Subscribed};
use super::ring::{Msg, Ring};
use super::tenant_channel::TenantChannel;
use crate::protocol::ServerMessage;
use crate::stream_event::{HistoryError, render, unavailable};
use paytrack_shared::ChannelKey;

/// The newest message of the channel's filters (0 when it has none).
pub(super) async fn latest_seq(stream: &Stream, filters: &[String]) -> Result<u64, HistoryError> {
    let mut latest = 0;
    for filter in filters {
        if let Some(message) = paytrack_nats::last_message(stream, filter).await.map_err(unavailable)? {
            latest = latest.max(message.sequence);
        }
    }
    Ok(latest)
}

/// The snapshot of a subscription whose continuity is not proven when it needs no
/// read: the REST list to reload for the wide channels, `missed` for user channels
/// (None for a payment, whose state is read from the stream).
pub(super) fn static_snapshot(channel: &ChannelKey) -> Option<Value> {
    match channel {
        ChannelKey::Payment(_) => None,
        ChannelKey::Merchant(id) => Some(json!({ "reload": format!("/v1/payments?merchant_id={id}") })),
        ChannelKey::Payments => Some(json!({ "reload": "/v1/payments" })),
        // Pushes are notifications, not state: there is nothing to reload. The
        // snapshot says explicitly that pushes between the client's `since` and
        // `position` were missed (aged out of PAYTRACK_PUSH, or another epoch).
        ChannelKey::User(_) => Some(json!({ "missed": true })),
        ChannelKey::Alerts => Some(json!({ "reload": "/v1/alerts" })),
    }
}

/// The channel's messages the ring holds after `after`, oldest first, from the entry's
/// index (the ring is scanned only for what the index does not cover yet, once).
pub(super) fn missed_in_ring(
    ring: &Ring,
    feed: Feed,
    key: &TenantChannel,
    entry: &mut Entry,
    after: u64,
) -> Vec<Arc<Msg>> {
    if after < entry.indexed_after {
        let upto = entry.indexed_after;
        let older: VecDeque<u64> = ring
            .after(after)
            .take_while(|m| m.seq <= upto)
            .filter(|m| matches(feed, &m.subject, key))
            .map(|m| m.seq)
            .collect();
        if !older.is_empty() {
            let newer = std::mem::replace(&mut entry.recent, older);
            entry.recent.extend(newer);
        }
        entry.indexed_after = after;
    }
    let start = entry.recent.partition_point(|seq| *seq <= after);
    entry
        .recent
        .range(start..)
        .filter_map(|seq| ring.get(*seq))
        .cloned()
        .collect()
}

/// Registers a subscription whose missed messages (those of the channel after
/// `after`) are all in the ring: queues `subscribed`, then them, and goes live, in one
/// step under the hub's lock. None (and nothing changed) when the session's queue
/// cannot take them at once: they go through a paged replay instead.
#[allow(clippy::too_many_arguments)]
pub(super) fn go_live_from_ring(
    inner: &mut Inner,
    feed: Feed,
    epoch: &str,
    key: &TenantChannel,
    request: &Request,
    latest: u64,
    recovered: bool,
    position: u64,
    after: u64,
    snapshot: Option<Value>,
) -> Option<Ready> {
    let name = request.channel.to_string();
    let Inner {
        rings,
        channels,
        user_devices,
        ..
    } = inner;
    let ring = &rings[feed as usize];
    let floor = ring.floor;
    let entry = attach_in(channels, user_devices, ring.head, key, &name);
    let missed = missed_in_ring(ring, feed, key, entry, after);
    let bytes = missed.iter().map(|m| m.payload.len()).sum();
    if !request.out.fits(missed.len() + 1, bytes) {
        // Taken back: idle again (or forgotten) as it was before.
        if entry.subs.is_empty() {
            detach_locked(inner, key, request.id);
        }
        return None;
    }
    if entry.latest.is_none() {
        entry.latest = Some(missed.last().map_or(latest, |m| m.seq.max(latest)));
    }
    if entry.below_floor.is_none() && latest <= floor && floor <= after {
        // Nothing of the channel lies in (latest, after], so none in (latest, floor].
        entry.below_floor = Some(latest);
    }
    let position = Position {
        epoch: epoch.to_owned(),
        seq: position,
    };
    request.out.send(&ServerMessage::Subscribed {
        channel: name.clone(),
        recovered,
        position: position.clone(),
        snapshot,
    });
    let mut sub = Sub {
        out: request.out.clone(),
        last_seq: position.seq,
        replay: None,
    };
    for message in &missed {
        deliver_one(&mut sub, &name, epoch, message);
    }
    if let Some(old) = request.replaces {
        entry.subs.remove(&old);
    }
    entry.subs.insert(request.id, sub);
    Some(Ready { recovered, position })
}

impl Hub {
    /// Starts a subscription without reading JetStream, when memory can answer it: the
    /// channel is followed by this edge (held by a session, or idle since recently) and
    /// either `since` is continued from the ring or, for a wide or user channel, the
    /// snapshot needs no read. Otherwise None: [`Hub::subscribe`] reads what is missing.
    pub fn subscribe_from_memory(&self, request: &Request) -> Option<Ready> {
        let feed = Feed::of(&request.channel);
        let key = request.key();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let epoch = &inner.epochs[feed as usize].clone();
        let ring = &inner.rings[feed as usize];
        let (head, floor) = (ring.head, ring.floor);
        let (latest, in_ring) = inner.channels.get(&key).and_then(|entry| {
            let latest = entry.latest?;
            Some((latest, |after: u64| entry.in_ring_after(floor, after)))
        })?;
        let since = request.since.as_ref().filter(|s| s.epoch == *epoch && s.seq <= head);
        let resume = match since {
            Some(since) if latest <= since.seq && (latest > 0 || since.seq == 0) => Some((since.seq, head)),
            Some(since) if in_ring(since.seq) => Some((since.seq, if latest <= since.seq { head } else { since.seq })),
            // Whether the stream still holds it takes a read.
            Some(_) => return None,
            None => None,
        };
        let snapshot = match (&resume, static_snapshot(&request.channel)) {
            (Some(_), _) => None,
            (None, Some(snapshot)) => Some(snapshot),
            // A payment's state takes a read.
            (None, None) => return None,
        };
        let recovered = resume.is_some();
        let (position, after) = resume.unwrap_or((latest, head));
        // None when the session cannot take the missed messages at once: a paged replay.
        go_live_from_ring(
            inner, feed, epoch, &key, request, latest, recovered, position, after, snapshot,
        )
    }

    /// Starts a subscription: decides where it continues from and queues `subscribed`.
    /// What it missed is queued at once when memory holds it and the session can take
    /// it (it is then live); otherwise the returned [`Backlog`] goes through
    /// [`Hub::replay`], which sends it as the client drains its queue and hands it over
    /// to the live feed without a gap or a duplicate. `subscribed` and the missed
    /// messages are queued before any live event. On error nothing changed: a
    /// subscription it would replace keeps working.
    pub async fn subscribe(&self, request: Request) -> Result<Subscribed, HistoryError> {
        if let Some(ready) = self.subscribe_from_memory(&request) {
            return Ok(Subscribed { ready, backlog: None });
        }
        let feed = Feed::of(&request.channel);
        let epoch = self.lock().epochs[feed as usize].clone();
        let key = request.key();
        let name = request.channel.to_string();
        let filters = request.channel.filters(&request.tenant, request.device.as_ref());
        let stream = &self.streams[feed as usize];

        // What is known of the channel: its newest message `latest`, and `known`:
        // the channel has no message in (latest, known].
        let head_before = *self.heads[feed as usize].borrow();
        let held = {
            let inner = self.lock();
            let ring = &inner.rings[feed as usize];
            inner.channels.get(&key).and_then(|e| {
                let latest = e.latest?;
                Some((latest, ring.head, e.below(ring.floor)))
            })
        };
        let (latest, known, below) = match held {
            Some(held) => held,
            None => {
                let (latest, known) = self.shared_latest(&key, stream, &filters, head_before).await?;
                // The feed must have passed the channel's newest message before the
                // memory can be trusted after it.
                let mut heads = self.heads[feed as usize].subscribe();
                tokio::time::timeout(self.timeout, heads.wait_for(|h| *h >= latest))
                    .await
                    .map_err(|_| unavailable("edge feed behind the stream"))?
                    .map_err(unavailable)?;
                (latest, known, None)
            }
        };

        // Continuity holds when the position is of this stream's incarnation, not in
        // the future, and every message of the channel after it is still readable.
        let since = request.since.as_ref().filter(|s| s.epoch == epoch && s.seq <= known);
        let mut resume: Option<(u64, u64)> = None; // (position, replay after)
        if let Some(since) = since {
            if latest <= since.seq && (latest > 0 || since.seq == 0) {
                resume = Some((since.seq, known));
            } else if below.is_some_and(|b| b <= since.seq)
                || self.ring_floor(feed) <= since.seq
                || since.seq + 1 >= self.first_seq(feed).await?
            {
                // Either the ring holds everything of the channel after it, or the
                // stream does.
                let after = if latest <= since.seq { known } else { since.seq };
                resume = Some((since.seq, after));
            }
        }
        // A resume with something to replay takes one of the edge's replay slots
        // before `subscribed`; when none frees up within the edge's timeout, the edge
        // will not replay it now and answers it as one whose continuity is not proven
        // (the snapshot or reload), rather than let it queue up.
        let mut slot = None;
        if let Some((_, after)) = resume
            && after < *self.heads[feed as usize].borrow()
        {
            match tokio::time::timeout(self.timeout, self.replays.clone().acquire_owned()).await {
                Ok(Ok(permit)) => slot = Some(permit),
                _ => {
                    metrics::counter!("paytrack_edge_replays_refused_total").increment(1);
                    tracing::info!(channel = %name, "no replay slot free: answered with a snapshot");
                    resume = None;
                }
            }
        }
        let recovered = resume.is_some();
        let (position, after) = resume.unwrap_or((latest, known));
        let snapshot = if recovered {
            None
        } else {
            self.snapshot(&request, stream).await?
        };
        let subscribed = |position: u64| ServerMessage::Subscribed {
            channel: name.clone(),
            recovered,
            position: Position {
                epoch: epoch.clone(),
                seq: position,
            },
            snapshot: snapshot.clone(),
        };

        // From memory at once, when the ring still holds everything after `after` and
        // the session can take it; otherwise a paged replay, registered now (live
        // messages are buffered from here), `subscribed` queued first.
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.epochs[feed as usize] != epoch {
            return Err(unavailable("stream recreated during the subscribe"));
        }
        let ring = &inner.rings[feed as usize];
        let (head, floor) = (ring.head, ring.floor);
        let in_ring = match inner.channels.get(&key) {
            Some(entry) => entry.in_ring_after(floor, after),
            None => floor <= after,
        };
        if in_ring
            && let Some(ready) = go_live_from_ring(
                inner,
                feed,
                &epoch,
                &key,
                &request,
                latest,
                recovered,
                position,
                after,
                snapshot.clone(),
            )
        {
            return Ok(Subscribed { ready, backlog: None });
        }
        let entry = attach(inner, &key, &name);
        entry.subs.insert(
            request.id,
            Sub {
                out: request.out.clone(),
                last_seq: position,
                replay: Some(Box::default()),
            },
        );
        if let Some(old) = request.replaces {
            entry.subs.remove(&old);
        }
        request.out.send(&subscribed(position));
        Ok(Subscribed {
            ready: Ready {
                recovered,
                position: Position {
                    epoch: epoch.clone(),
                    seq: position,
                },
            },
            backlog: Some(Backlog {
                feed,
                key,
                name,
                id: request.id,
                out: request.out.clone(),
                epoch,
                filters,
                last_seq: position,
                latest,
                cursor: after,
                through: head,
                slot,
            }),
        })
    }

    /// Queues `subscribed` again for a channel the session already holds, at the
    /// position it has reached (a repeated subscribe without `since` is idempotent).
    pub fn resubscribed(&self, request: &Request, id: u64) -> Option<Position> {
        let key = request.key();
        let inner = self.lock();
        let epoch = inner.epochs[Feed::of(&request.channel) as usize].clone();
        let sub = inner.channels.get(&key)?.subs.get(&id)?;
        if sub.replay.is_some() {
            return None;
        }
        let position = Position {
            epoch,
            seq: sub.last_seq,
        };
        request.out.send(&ServerMessage::Subscribed {
            channel: request.channel.to_string(),
            recovered: true,
            position: position.clone(),
            snapshot: None,
        });
        Some(position)
    }

    pub(super) fn ring_floor(&self, feed: Feed) -> u64 {
        self.lock().rings[feed as usize].floor
    }

    /// The newest message of a channel this edge holds no position of, and what is
    /// known with it: `(latest, known)`, the channel having no message in
    /// `(latest, known]`. One read serves every subscribe of the channel that starts
    /// while it is in flight, so thousands of sessions joining a fresh edge's
    /// `payments` read the stream once, not once each (each read of a wide channel
    /// scans the stream's subjects; a read per session kept nats-server saturated
    /// and every read timing out). The read starts after its own caller's
    /// `head_before`, so its `known` holds; a subscribe that joins it later uses
    /// that older fact, as if the first had been slower. A failed read is not
    /// shared: the next waiter reads again.
    pub(super) async fn shared_latest(
        &self,
        key: &TenantChannel,
        stream: &Stream,
        filters: &[String],
        head_before: u64,
    ) -> Result<(u64, u64), HistoryError> {
        let read = {
            let mut reads = self.latest_reads.lock().unwrap_or_else(|p| p.into_inner());
            reads.entry(key.clone()).or_default().clone()
        };
        let result = read
            .get_or_try_init(|| async {
                let _permit = self.permits.acquire().await.map_err(unavailable)?;
                let latest = latest_seq(stream, filters).await?;
                Ok::<_, HistoryError>((latest, head_before.max(latest)))
            })
            .await
            .copied();
        let mut reads = self.latest_reads.lock().unwrap_or_else(|p| p.into_inner());
        if reads.get(key).is_some_and(|r| Arc::ptr_eq(r, &read)) {
            // Later subscribes find the channel in memory, or read afresh.
            reads.remove(key);
        }
        result
    }

    pub(super) async fn first_seq(&self, feed: Feed) -> Result<u64, HistoryError> {
        let _permit = self.permits.acquire().await.map_err(unavailable)?;
        let info = self.streams[feed as usize].get_info().await.map_err(unavailable)?;
        Ok(info.state.first_sequence)
    }

    /// The snapshot of docs/contract.md §7 for a subscription whose continuity is not proven:
    /// the payment's state, `{"reload": <REST list>}` for the wide channels, and
    /// `{"missed": true}` for `user:` channels.
    pub(super) async fn snapshot(&self, request: &Request, stream: &Stream) -> Result<Option<Value>, HistoryError> {
        match &request.channel {
            ChannelKey::Payment(id) => {
                let _permit = self.permits.acquire().await.map_err(unavailable)?;
                let filter = subjects::status_of_payment(&request.tenant, id);
                let last = paytrack_nats::last_message(stream, &filter)
                    .await
                    .map_err(unavailable)?;
                Ok(last.and_then(|m| render(&m.subject, &m.payload).map(|(_, body)| Value::Object(body))))
            }
            other => Ok(static_snapshot(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::router::feed::ingest_locked;

    #[test]
    fn an_idle_channel_answers_a_since_older_than_the_ring_from_its_index() {
        let key = TenantChannel::parse("a", "merchant:m1", None);
        let mut inner = Inner::new(
            [Ring::new(10, 4), Ring::new(0, 4), Ring::new(0, 4)],
            ["e"; 3].map(str::to_owned),
            crate::router::IdleWindow::default(),
        );
        // Followed since seq 10, when it had no message (latest 0), now idle.
        inner.channels.insert(
            key.clone(),
            Entry {
                latest: Some(0),
                idle: Some(0),
                ..Entry::new("merchant:m1", 10)
            },
        );
        for seq in 11..=17 {
            let merchant = if seq == 12 || seq == 16 { "m1" } else { "m2" };
            ingest_locked(
                &mut inner,
                Feed::Status,
                &Msg::note(seq, &format!("paytrack.status.a.{merchant}.p{seq}")),
            );
        }
        let ring = &inner.rings[0];
        assert_eq!((ring.floor, ring.head), (13, 17));
        let entry = inner.channels.get_mut(&key).unwrap();
        // 12 left the ring: the channel's newest at the floor; 16 is indexed.
        assert_eq!((entry.latest, entry.below_floor), (Some(16), Some(12)));
        assert_eq!(entry.recent, VecDeque::from([16]));
        // A since at or after 12 is continued from the ring; one before it is not.
        assert!(entry.in_ring_after(ring.floor, 12));
        assert!(!entry.in_ring_after(ring.floor, 11));
        let missed: Vec<u64> = missed_in_ring(ring, Feed::Status, &key, entry, 12)
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(missed, vec![16]);
        assert!(missed_in_ring(ring, Feed::Status, &key, entry, 16).is_empty());
    }
}
