//! HTTP helpers shared by the services that serve HTTP.

use tracing::Span;

/// The span of one HTTP request: method and path only. The query string is left out
/// on purpose: browsers pass WebSocket tokens as `?token=`, and logs never carry
/// secrets.
pub fn request_span<B>(request: &http::Request<B>) -> Span {
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_never_records_the_query() {
        crate::telemetry::init_for_tests();
        let request = http::Request::get("/v1/ws?token=secret").body(()).unwrap();
        let span = request_span(&request);
        let rendered = format!("{:?}", span.metadata().map(|m| m.fields().to_string()));
        assert!(!rendered.contains("uri"));
        assert!(!rendered.contains("query"));
    }
}
