//! The edge's feeds: one ordered consumer per stream, read for as long as the
//! edge runs, each message added to the ring and queued to every session of every
//! channel it belongs to.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream::Stream};
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use paytrack_shared::metrics::latency;
use paytrack_shared::{subjects, telemetry};
use tokio_util::sync::CancellationToken;
use tracing::field;

use super::channels::{Entry, each_key};
use super::frame::encode_event;
use super::hub::{Hub, Inner, Sub};
use super::ring::Msg;
use crate::stream_event::{HistoryError, unavailable};
use paytrack_shared::ChannelKey;

/// How many streams channels read (the length of the hub's per-feed arrays).
pub(super) const FEEDS: usize = 3;

/// The streams channels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// PAYTRACK_STATUS: payment, merchant and tenant-wide channels.
    Status = 0,
    /// PAYTRACK_PUSH: user channels.
    Push = 1,
    /// PAYTRACK_ALERT: the tenant's `alerts` channel (alerts and their
    /// acknowledgements).
    Alert = 2,
}

impl Feed {
    pub(super) const ALL: [Feed; FEEDS] = [Feed::Status, Feed::Push, Feed::Alert];

    pub(super) fn of(channel: &ChannelKey) -> Feed {
        match channel {
            ChannelKey::User(_) => Feed::Push,
            ChannelKey::Alerts => Feed::Alert,
            _ => Feed::Status,
        }
    }

    pub(super) fn stream(self) -> &'static str {
        match self {
            Feed::Status => subjects::STREAM_STATUS,
            Feed::Push => subjects::STREAM_PUSH,
            Feed::Alert => subjects::STREAM_ALERT,
        }
    }
}

/// Queues `message` to `sub` (skipping what it already has), chaining its `prev_seq`.
pub(super) fn deliver_one(sub: &mut Sub, channel: &str, epoch: &str, message: &Msg) {
    if message.seq <= sub.last_seq || message.rendered().is_none() {
        return;
    }
    if let Some(frame) = encode_event(channel, epoch, message, sub.last_seq) {
        sub.last_seq = message.seq;
        sub.out.push(frame);
    }
}

/// [`Hub::ingest`] under the hub's lock: queues `message` to the channels it belongs
/// to, indexes it on their entries, adds it to the ring and records, on the entries of
/// the message the ring evicts, that it is now their newest at the floor.
pub(super) fn ingest_locked(inner: &mut Inner, feed: Feed, message: &Arc<Msg>) {
    let Inner {
        rings,
        epochs,
        channels,
        user_devices,
        ..
    } = inner;
    let epoch = &epochs[feed as usize];
    let mut queued = 0;
    each_key(feed, &message.subject, user_devices, |key| {
        if let Some(entry) = channels.get_mut(&key) {
            queued += dispatch(entry, epoch, message);
        }
    });
    if queued > 0
        && let Some(headers) = &message.headers
    {
        latency::observe_stamped(latency::FRAME_QUEUED, headers);
    }
    if let Some(evicted) = rings[feed as usize].push(message.clone()) {
        each_key(feed, &evicted.subject, user_devices, |key| {
            if let Some(entry) = channels.get_mut(&key) {
                entry.below_floor = Some(evicted.seq);
                if entry.recent.front() == Some(&evicted.seq) {
                    entry.recent.pop_front();
                    if entry.recent.is_empty() {
                        entry.recent = VecDeque::new();
                    }
                }
            }
        });
    }
}

/// An ordered consumer over the whole stream from `from` on.
pub(super) async fn open_feed(stream: &Stream, from: u64) -> Result<consumer::pull::Ordered, HistoryError> {
    let config = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(unavailable)?;
    consumer.messages().await.map_err(unavailable)
}

/// Queues `message` to every subscription of `entry`: encoded once per `prev_seq`
/// (once, when every session is current on the channel), the same bytes to each.
/// Returns to how many subscriptions it was queued.
pub(super) fn dispatch(entry: &mut Entry, epoch: &str, message: &Arc<Msg>) -> usize {
    entry.recent.push_back(message.seq);
    if entry.latest.is_some() {
        entry.latest = Some(message.seq);
    }
    if entry.subs.is_empty() {
        return 0;
    }
    if message.rendered().is_none() {
        tracing::warn!(channel = %entry.name, seq = message.seq, "unreadable message skipped");
        return 0;
    }
    let span = tracing::info_span!("deliver", trace_id = field::Empty, channel = %entry.name, seq = message.seq);
    if let Some(headers) = &message.headers {
        telemetry::continue_from(&span, &telemetry::NatsHeaders(headers));
    }
    telemetry::record_trace_id(&span);
    let _guard = span.enter();
    let mut encoded: Vec<(u64, Utf8Bytes)> = Vec::with_capacity(1);
    let mut queued = 0usize;
    for sub in entry.subs.values_mut() {
        if message.seq <= sub.last_seq {
            continue;
        }
        if let Some(replay) = &mut sub.replay {
            replay.buffer(message);
            continue;
        }
        let prev_seq = sub.last_seq;
        let frame = match encoded.iter().find(|(p, _)| *p == prev_seq) {
            Some((_, frame)) => frame.clone(),
            None => {
                let Some(frame) = encode_event(&entry.name, epoch, message, prev_seq) else {
                    continue;
                };
                encoded.push((prev_seq, frame.clone()));
                frame
            }
        };
        sub.last_seq = message.seq;
        sub.out.push(frame);
        queued += 1;
    }
    if queued > 0 {
        tracing::debug!(sessions = queued, encodings = encoded.len(), "event queued");
    }
    queued
}

impl Hub {
    /// Reads one stream from `from` on (`(from, generation)`), for as long as the edge
    /// runs. The ordered consumer recovers from lost messages and reconnects by
    /// itself; if it ends it is recreated after the last sequence seen, once the
    /// stream is checked to be the same incarnation. When the stream is found
    /// recreated ([`Hub::restart_feed`]) it reopens at the new incarnation's start.
    pub(super) async fn feed(
        self: Arc<Self>,
        feed: Feed,
        (mut from, mut generation): (u64, u64),
        first: consumer::pull::Ordered,
        shutdown: CancellationToken,
    ) {
        let stream = self.streams[feed as usize].clone();
        let mut first = Some(first);
        while !shutdown.is_cancelled() {
            let opened = match first.take() {
                Some(messages) => Ok(messages),
                None => {
                    // The stream may have been recreated while the feed was away.
                    let before = self.resume_point(feed);
                    match tokio::time::timeout(self.timeout, stream.get_info()).await {
                        Ok(Ok(info)) => self.notice_recreation(feed, &info, before),
                        _ => false,
                    };
                    (from, generation) = self.resume_point(feed);
                    open_feed(&stream, from).await
                }
            };
            let mut messages = match opened {
                Ok(messages) => messages,
                Err(error) => {
                    self.health[feed as usize].consumer_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, stream = feed.stream(), "edge feed not open; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            tracing::info!(stream = feed.stream(), from, "edge feed open");
            if self.lock().generations[feed as usize] == generation {
                self.health[feed as usize].reopening.store(false, Ordering::Relaxed);
            }
            loop {
                let next = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = self.reopen[feed as usize].notified() => {
                        tracing::info!(stream = feed.stream(), "edge feed reopens on the recreated stream");
                        break;
                    }
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        let Ok(info) = message.info() else { continue };
                        let seq = info.stream_sequence;
                        let message = Msg::new(seq, &message.subject, message.payload.clone(), message.headers.clone());
                        if !self.ingest(feed, generation, message) {
                            // Of the old incarnation: reopen on the new one.
                            break;
                        }
                        self.health[feed as usize].consumer_ok.store(true, Ordering::Relaxed);
                        from = seq + 1;
                    }
                    Some(Err(error)) => {
                        self.health[feed as usize].consumer_ok.store(false, Ordering::Relaxed);
                        tracing::warn!(%error, stream = feed.stream(), "edge feed error; the ordered consumer recovers");
                    }
                    None => {
                        self.health[feed as usize].consumer_ok.store(false, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }

    /// Adds a message to the ring and queues it to every session of every channel it
    /// belongs to; false (and nothing done) when it comes from a feed opened on an
    /// incarnation of the stream that has since been found recreated.
    pub(super) fn ingest(&self, feed: Feed, generation: u64, message: Arc<Msg>) -> bool {
        let mut guard = self.lock();
        if guard.generations[feed as usize] != generation {
            return false;
        }
        ingest_locked(&mut guard, feed, &message);
        drop(guard);
        self.heads[feed as usize].send_replace(message.seq);
        metrics::counter!("paytrack_edge_feed_messages_total", "stream" => feed.stream()).increment(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use serde_json::{Value, json};

    use super::*;
    use crate::send_queue::SendQueue;

    #[test]
    fn routing_a_message_to_its_channels_allocates_nothing() {
        use crate::router::ring::Ring;
        use crate::router::tenant_channel::TenantChannel;
        let channel_key = TenantChannel::parse;
        let mut inner = Inner::new(
            [Ring::new(0, 4), Ring::new(0, 4), Ring::new(0, 4)],
            ["e"; FEEDS].map(str::to_owned),
            crate::router::IdleWindow::default(),
        );
        // Followed channels (idle: no session to encode for), one of them device-bound.
        for (key, name) in [
            (channel_key("acme", "merchant:m1", None), "merchant:m1"),
            (channel_key("acme", "payments", None), "payments"),
            (channel_key("acme", "user:u1", Some("d1")), "user:u1"),
        ] {
            inner.channels.insert(
                key,
                Entry {
                    latest: Some(0),
                    ..Entry::new(name, 0)
                },
            );
        }
        inner.user_devices.insert(
            channel_key("acme", "user:u1", None),
            [(paytrack_shared::DeviceId::new("d1").unwrap(), 1)]
                .into_iter()
                .collect(),
        );
        let status: Vec<_> = (1..=64)
            .map(|seq| Msg::note(seq, &format!("paytrack.status.acme.m1.p{seq}")))
            .collect();
        let pushes: Vec<_> = (1..=64)
            .map(|seq| Msg::note(seq, "paytrack.push.acme.u1.all"))
            .collect();
        // Warm up: the rings and the channels' indexes reach their steady size.
        for (status, push) in status.iter().zip(&pushes).take(8) {
            ingest_locked(&mut inner, Feed::Status, status);
            ingest_locked(&mut inner, Feed::Push, push);
        }
        let routed = allocation_counter::measure(|| {
            for message in &status[8..] {
                ingest_locked(&mut inner, Feed::Status, message);
            }
            for message in &pushes[8..] {
                ingest_locked(&mut inner, Feed::Push, message);
            }
        });
        assert_eq!(routed.count_total, 0, "allocations while routing: {routed:?}");
        let merchant = &inner.channels[&channel_key("acme", "merchant:m1", None)];
        assert_eq!(merchant.latest, Some(64));
        let device = &inner.channels[&channel_key("acme", "user:u1", Some("d1"))];
        assert_eq!(device.latest, Some(64));
    }

    #[test]
    fn one_encoding_per_prev_seq_is_shared_by_every_session_and_chains() {
        let mut entry = Entry {
            latest: Some(0),
            ..Entry::new("user:u", 0)
        };
        let mut receivers = Vec::new();
        for id in 0..3 {
            let (out, rx) = SendQueue::new(16, 1 << 20);
            receivers.push((out, rx));
            entry.subs.insert(
                id,
                Sub {
                    out: receivers[id as usize].0.clone(),
                    last_seq: 4,
                    replay: None,
                },
            );
        }
        dispatch(&mut entry, "e", &Msg::note(5, "paytrack.push.a.u.all"));
        dispatch(&mut entry, "e", &Msg::note(9, "paytrack.push.a.u.all"));
        // A message the session already has (a replay overlapping the feed) is skipped.
        dispatch(&mut entry, "e", &Msg::note(9, "paytrack.push.a.u.all"));
        assert_eq!(entry.latest, Some(9));
        let mut frames = Vec::new();
        for (_, rx) in &mut receivers {
            let mut mine = Vec::new();
            while let Some(Some(frame)) = rx.recv().now_or_never() {
                mine.push(frame);
            }
            frames.push(mine);
        }
        assert!(frames.iter().all(|f| f.len() == 2 && *f == frames[0]));
        let first: Value = serde_json::from_str(&frames[0][0]).unwrap();
        let second: Value = serde_json::from_str(&frames[0][1]).unwrap();
        assert_eq!(
            (first["prev_seq"].clone(), first["position"]["seq"].clone()),
            (json!(4), json!(5))
        );
        assert_eq!(second["prev_seq"], 5);
        assert_eq!(second["type"], "event");
        assert_eq!(second["kind"], "push");
        assert_eq!(frames[0][1].matches("\"type\"").count(), 1);
        assert_eq!(second["n"], 9);
    }

    #[test]
    fn a_message_is_rendered_only_once_a_session_is_sent_it() {
        let (out, mut rx) = SendQueue::new(16, 1 << 20);
        let mut entry = Entry {
            latest: Some(0),
            ..Entry::new("merchant:m1", 0)
        };
        let nobody = Msg::note(3, "paytrack.push.a.u.all");
        dispatch(&mut entry, "e", &nobody);
        assert!(
            nobody.rendered.get().is_none(),
            "rendered with no session to send it to"
        );
        entry.subs.insert(
            1,
            Sub {
                out,
                last_seq: 3,
                replay: None,
            },
        );
        let held = Msg::note(4, "paytrack.push.a.u.all");
        dispatch(&mut entry, "e", &held);
        assert!(held.rendered.get().is_some_and(Option::is_some));
        let frame: Value = serde_json::from_str(&rx.recv().now_or_never().flatten().unwrap()).unwrap();
        assert_eq!((frame["n"].clone(), frame["prev_seq"].clone()), (json!(4), json!(3)));
    }
}
