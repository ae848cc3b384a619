//! Query parameters and path segments are checked here before they reach a query:
//! PostgreSQL refuses a NUL in `text` with an error, which would answer 500 for
//! what is the caller's mistake. Each check answers 400 `invalid_request` naming the
//! parameter (or 404 for a path segment that no resource can have).

use paytrack_shared::ids::validate_token;

use crate::error::ApiError;

/// Longest alert id accepted in a path (`<tenant>:<payment>:<kind>:<discriminator>`).
pub const MAX_ALERT_ID_LEN: usize = 512;

/// `value` of query parameter `name`, which must be an identifier
/// (`[A-Za-z0-9_-]{1,64}`, as payment ids, merchant ids and alert kinds are).
pub fn token<'a>(name: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) => validate_token(v, name)
            .map(|()| Some(v))
            .map_err(|e| ApiError::Invalid(e.to_string())),
        None => Ok(None),
    }
}

/// An alert id from the path: printable and bounded, else no such alert (404).
pub fn alert_id(value: &str) -> Result<&str, ApiError> {
    if value.is_empty() || value.len() > MAX_ALERT_ID_LEN || value.chars().any(char::is_control) {
        return Err(ApiError::NotFound("no such alert".into()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_overlong_values_are_refused() {
        assert!(token("cursor", Some("pay\u{0}")).is_err());
        assert!(token("cursor", Some(&"p".repeat(65))).is_err());
        assert!(token("kind", Some("")).is_err());
        assert_eq!(token("kind", Some("dead_letter")).ok(), Some(Some("dead_letter")));
        assert_eq!(token("kind", None).ok(), Some(None));
        assert!(alert_id("\u{0}").is_err());
        assert!(alert_id(&"a".repeat(513)).is_err());
        assert!(alert_id("t:p:unclear_pending:3").is_ok());
    }
}
