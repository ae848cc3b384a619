//! HTTP latency per route: `paytrack_http_request_duration_seconds{service, method,
//! route, status}`, timed from the request reaching the router to its response's
//! head (a WebSocket upgrade until its `101`, an SSE stream until its headers).
//!
//! `route` is the route's template (`/v1/payments/{id}`), never the path itself, and
//! `unmatched` for a request no route took, so ids and probes cannot grow the number
//! of series; an unusual method is counted as `other` for the same reason.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;

/// The histogram's name.
pub const REQUEST_DURATION: &str = "paytrack_http_request_duration_seconds";

/// Wraps every route of `router` (add it last, after the fallback) so each request's
/// latency is recorded under `service`.
pub fn time_requests(router: Router, service: &'static str) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| async move {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map(|path| path.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".to_owned());
            let method = method_label(request.method());
            let started = Instant::now();
            let response = next.run(request).await;
            metrics::histogram!(
                REQUEST_DURATION,
                "service" => service,
                "method" => method,
                "route" => route,
                "status" => response.status().as_str().to_owned(),
            )
            .record(started.elapsed().as_secs_f64());
            response
        },
    ))
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    #[tokio::test]
    async fn routes_are_labelled_by_template_and_strays_as_unmatched() -> anyhow::Result<()> {
        let handle = crate::metrics::handle().ok_or_else(|| anyhow::anyhow!("no recorder"))?;
        let router = time_requests(Router::new().route("/v1/things/{id}", get(|| async { "ok" })), "unit");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
        for path in ["/v1/things/a1", "/v1/things/b2", "/probe/../etc/passwd", "/nowhere"] {
            reqwest::get(format!("{base}{path}")).await?;
        }
        let text = handle.render();
        let series = |route: &str, status: &str| {
            format!(
                "paytrack_http_request_duration_seconds_count{{service=\"unit\",method=\"GET\",route=\"{route}\",status=\"{status}\"}}"
            )
        };
        assert!(
            text.contains(&format!("{} 2", series("/v1/things/{id}", "200"))),
            "{text}"
        );
        assert!(text.contains(&format!("{} 2", series("unmatched", "404"))), "{text}");
        assert!(!text.contains("passwd") && !text.contains("a1"), "{text}");
        Ok(())
    }
}
