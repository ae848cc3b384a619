//! Card-number masking of stored webhook bodies.
//!
//! A provider body may carry a card number (a PAN). Before a body is kept as
//! evidence, every run of 13 to 19 ASCII digits that passes the Luhn check has all
//! but its last four digits replaced by `*`, one byte for one byte: the stored body
//! has the received body's length and every other byte unchanged, so offsets, JSON
//! structure (inside strings) and every other field stay exactly as received. The
//! signature is then no longer re-computable over the stored body alone (see
//! docs/webhooks.md, "What the evidence keeps").

use std::borrow::Cow;

/// Shortest and longest digit runs treated as card numbers.
const PAN_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// `body` with card-like numbers masked, and how many were masked. A body without
/// any (nearly every one) is borrowed as it is: no copy per webhook.
pub fn mask_card_numbers(body: &str) -> (Cow<'_, str>, usize) {
    let bytes = body.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut masked = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let run = &bytes[start..i];
        if PAN_DIGITS.contains(&run.len()) && luhn(run) {
            let out = out.get_or_insert_with(|| bytes.to_vec());
            for b in &mut out[start..i - 4] {
                *b = b'*';
            }
            masked += 1;
        }
    }
    let Some(out) = out else {
        return (Cow::Borrowed(body), 0);
    };
    // Only ASCII digits were replaced by an ASCII byte: still UTF-8.
    (
        Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| body.to_owned())),
        masked,
    )
}

/// The Luhn check of a run of ASCII digits.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_without_card_numbers_is_not_copied() {
        let body = r#"{"amount":1250,"ts":1700000000,"not_luhn":"4242424242424241"}"#;
        let (kept, count) = mask_card_numbers(body);
        assert_eq!(count, 0);
        assert!(matches!(kept, Cow::Borrowed(b) if std::ptr::eq(b, body)));
    }

    #[test]
    fn card_numbers_are_masked_and_nothing_else_changes() {
        let body = r#"{"card":"4242424242424242","amex":"378282246310005","amount":1250,"ts":1700000000,"not_luhn":"4242424242424241","long":"42424242424242424242"}"#;
        let (masked, count) = mask_card_numbers(body);
        assert_eq!(count, 2);
        assert_eq!(masked.len(), body.len());
        assert!(masked.contains(r#""card":"************4242""#), "{masked}");
        assert!(masked.contains(r#""amex":"***********0005""#), "{masked}");
        for kept in ["1250", "1700000000", "4242424242424241", "42424242424242424242"] {
            assert!(masked.contains(kept), "{kept}");
        }
        let differing: Vec<usize> = (0..body.len())
            .filter(|&i| body.as_bytes()[i] != masked.as_bytes()[i])
            .collect();
        assert!(differing.iter().all(|&i| masked.as_bytes()[i] == b'*'));
        assert_eq!(differing.len(), 12 + 11);
    }

    #[test]
    fn a_body_without_card_numbers_is_returned_as_is() {
        let body = "{\"é\":\"ü 123\"}";
        assert_eq!(mask_card_numbers(body), (Cow::Borrowed(body), 0));
    }
}
