//! The HTTP calls every operator command makes: a bearer token on each request, and
//! one reading of a refusal. A non-2xx answer becomes a [`Refusal`] carrying the
//! problem's `title` and `detail` (RFC 9457), or the older `error` and `message`, so
//! the command prints why and exits non-zero. Transport errors never echo a URL, which
//! may hold credentials.

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// A non-2xx answer, as an operator reads it.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The problem's `title`, else its `error` code, else the status's reason.
    pub title: String,
    /// The problem's `detail`, else its `message`, if any.
    pub detail: Option<String>,
    /// The problem's `code` (or `error`), if any.
    pub code: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(code) = self.code.as_ref().filter(|c| **c != self.title) {
            write!(f, " ({code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// Reads a refusal's body: problem+json first, then `{error, message}`, else the
    /// status's own words.
    pub fn read(status: reqwest::StatusCode, body: &str) -> Refusal {
        let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let code = text("code").or_else(|| text("error"));
        let title = text("title")
            .or_else(|| code.clone())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned());
        Refusal {
            status: status.as_u16(),
            title,
            detail: text("detail").or_else(|| text("message")),
            code,
        }
    }
}

/// A base URL with any user name and password taken out, for messages.
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<an unparsable URL>".to_owned(),
    }
}

/// One HTTP API (ingest's or the simulator's) and the token presented to it.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    /// Which service this is, for messages.
    name: &'static str,
}

impl Api {
    /// An API at `base` called with `token`.
    pub fn new(name: &'static str, base: &str, token: SecretString) -> anyhow::Result<Api> {
        anyhow::ensure!(
            reqwest::Url::parse(base).is_ok(),
            "{name}'s URL is not a URL: {}",
            shown(base)
        );
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            token,
            name,
        })
    }

    /// `GET path?query`: the JSON answer of a 2xx, else the refusal.
    pub async fn get(&self, path: &str, query: &[(String, String)]) -> anyhow::Result<Value> {
        let request = self.http.get(format!("{}{path}", self.base)).query(query);
        self.send(request).await.map(|(_, body)| body)
    }

    /// `POST path` with a JSON body (and an `Idempotency-Key` if given): the status
    /// and JSON answer of a 2xx, else the refusal.
    pub async fn post(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("calling {} at {}", self.name, shown(&self.base)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| format!("reading {}'s answer", self.name))?;
        if !status.is_success() {
            return Err(Refusal::read(status, &text).into());
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("{} answered {status} with a body that is not JSON", self.name))?
        };
        Ok((status.as_u16(), body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_prefers_the_problem_then_the_older_error_body() {
        let conflict = reqwest::StatusCode::CONFLICT;
        let problem = Refusal::read(
            conflict,
            r#"{"type":"about:blank","title":"Conflict","status":409,"detail":"already succeeded","code":"invalid_state"}"#,
        );
        assert_eq!(
            problem.to_string(),
            "HTTP 409: Conflict: already succeeded (invalid_state)"
        );
        let older = Refusal::read(conflict, r#"{"error":"invalid_state","message":"already succeeded"}"#);
        assert_eq!(older.to_string(), "HTTP 409: invalid_state: already succeeded");
        let empty = Refusal::read(reqwest::StatusCode::NOT_FOUND, "");
        assert_eq!(empty.to_string(), "HTTP 404: Not Found");
    }

    #[test]
    fn a_shown_url_holds_no_credentials() {
        assert_eq!(shown("http://ops:hunter2@127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert!(!shown("not a url with hunter2").contains("hunter2"));
    }
}
