//! The bounds every verified provider event is held to before it becomes a fact,
//! whatever its scheme: times a date can be computed from, and strings short enough
//! to be keys. A signed event outside them is refused with 400 (the provider sent
//! something no retry changes), never stored, so nothing downstream (return
//! windows, KV keys, the projection) meets a value it cannot handle.

use chrono::{DateTime, TimeDelta, Utc};

use super::Verified;
use crate::error::ApiError;

/// The earliest provider time accepted: no provider paytrack speaks dates a
/// payment event before it.
pub const EARLIEST: DateTime<Utc> = match DateTime::from_timestamp(946_684_800, 0) {
    // 2000-01-01T00:00:00Z
    Some(at) => at,
    None => DateTime::<Utc>::MIN_UTC,
};
/// How far past now a provider time may be (clocks drift; a day is generous).
pub const MAX_AHEAD: TimeDelta = match TimeDelta::try_days(1) {
    Some(d) => d,
    None => TimeDelta::zero(),
};
/// Longest provider reference (`pi_…`, `pay_…`): it becomes part of a KV key.
pub const MAX_PROVIDER_REF_LEN: usize = 256;
/// Longest event type (`payment_intent.succeeded`).
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Longest failure reason kept.
pub const MAX_REASON_LEN: usize = 2_000;

/// Checks `verified` against the bounds at `now`; 400 naming the first one broken.
pub fn check(verified: &Verified, now: DateTime<Utc>) -> Result<(), ApiError> {
    let event = &verified.event;
    if let Some(at) = event.occurred_at {
        check_time(at, now)?;
    }
    check_len("provider_ref", event.provider_ref.as_deref(), MAX_PROVIDER_REF_LEN)?;
    check_len("event type", Some(&event.event_type), MAX_EVENT_TYPE_LEN)?;
    check_len("reason", event.reason.as_deref(), MAX_REASON_LEN)?;
    Ok(())
}

/// Whether a provider's time lies between [`EARLIEST`] and now + [`MAX_AHEAD`].
pub fn check_time(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), ApiError> {
    let latest = now.checked_add_signed(MAX_AHEAD).unwrap_or(DateTime::<Utc>::MAX_UTC);
    if at < EARLIEST || at > latest {
        return Err(ApiError::Malformed(format!(
            "the event's time {} is outside 2000-01-01 .. one day from now",
            at.to_rfc3339()
        )));
    }
    Ok(())
}

fn check_len(field: &str, text: Option<&str>, max: usize) -> Result<(), ApiError> {
    match text {
        Some("") => Err(ApiError::Malformed(format!("{field} must not be empty"))),
        Some(t) if t.len() > max => Err(ApiError::Malformed(format!("{field} is longer than {max} bytes"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_times_are_held_between_2000_and_a_day_ahead() {
        let now = "2026-12-06T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        for ok in ["2000-01-01T00:00:00Z", "2019-09-05T09:10:06Z", "2026-12-07T10:00:00Z"] {
            assert!(check_time(at(ok), now).is_ok(), "{ok}");
        }
        for bad in [
            DateTime::<Utc>::MIN_UTC,
            at("1999-12-31T23:59:59Z"),
            at("2026-12-07T10:00:01Z"),
            DateTime::<Utc>::MAX_UTC,
        ] {
            assert!(check_time(bad, now).is_err(), "{bad}");
        }
        assert!(check_time(at("2026-12-06T10:00:00Z"), DateTime::<Utc>::MAX_UTC).is_ok());
    }
}
