//! HTTP helpers shared by the services that serve HTTP: the one server loop every
//! listener runs ([`serve`]), the panic guard every router gets, and the request span.
//!
//! `axum::serve` has no header-read timeout: a client that sends half its headers
//! holds a connection (and its task) for as long as it likes. [`serve`] runs hyper's
//! HTTP/1 connection directly with `header_read_timeout`, upgrades enabled (the edge's
//! WebSockets), and the same graceful shutdown: stop accepting, let requests in flight
//! finish.

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Response, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Span;

use crate::problem::{Problem, ProblemType};

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a client may take to send a request's headers, from the first byte
    /// it owes (also the longest a kept-alive connection may sit idle).
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The span of one HTTP request: method and path only. The query string is left out
/// on purpose: browsers pass WebSocket tokens as `?token=`, and logs never carry
/// secrets.
pub fn request_span<B>(request: &http::Request<B>) -> Span {
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
}

/// Wraps `router` so that a panicking handler answers 500
/// an `internal` problem and is logged, instead of dropping the connection
/// without an answer. [`serve`] applies it to every router it serves.
pub fn catch_panics(router: Router) -> Router {
    router.layer(CatchPanicLayer::custom(panic_response))
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %detail, "a request handler panicked");
    metrics::counter!("paytrack_http_panics_total").increment(1);
    Problem::new(ProblemType::Internal, "internal error").into_response()
}

/// Wraps `router` so that a request whose `Content-Length` exceeds `max_bytes` is
/// answered 413 `body_too_large` at once, before any of its body is
/// read, and the connection is closed. The body-limit extractors only notice while
/// reading: a client declaring 10 GB and sending one byte would otherwise hold the
/// request open, unanswered, until a timeout. `refused` is told the path of each
/// request so answered (for the service's own metrics).
pub fn refuse_oversized_bodies<F>(router: Router, max_bytes: usize, refused: F) -> Router
where
    F: Fn(&str) + Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let refused = refused.clone();
            async move {
                let declared = request
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|n| n > max_bytes as u64) {
                    refused(request.uri().path());
                    return too_large(max_bytes);
                }
                next.run(request).await
            }
        },
    ))
}

fn too_large(max_bytes: usize) -> Response<Body> {
    // The rest of the declared body is never read: the connection cannot be reused.
    Problem::new(ProblemType::BodyTooLarge, format!("body larger than {max_bytes} bytes"))
        .header(header::CONNECTION, header::HeaderValue::from_static("close"))
        .into_response()
}

/// Serves `router` (with [`catch_panics`]) on `listener` until `shutdown` is
/// cancelled, then stops accepting and waits for the requests in flight. A
/// connection that has not sent a complete request head within
/// `options.header_read_timeout` is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = catch_panics(router);
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Per-connection failures (reset before accept) and resource
                    // exhaustion (EMFILE) must not end the server; back off briefly
                    // on the latter so a full fd table does not spin the loop.
                    tracing::warn!(%error, "accept failed");
                    if !is_connection_error(&error) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        // Small JSON frames: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    async fn start(
        options: ServeOptions,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let router = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/panic", get(|| async { panic!("boom") as &'static str }));
        let server = tokio::spawn(serve(listener, router, options, shutdown.clone()));
        (addr, shutdown, server)
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_and_the_server_keeps_serving() {
        crate::telemetry::init_for_tests();
        let (addr, _shutdown, _server) = start(ServeOptions::default()).await;
        let response = reqwest::get(format!("http://{addr}/panic")).await.unwrap();
        assert_eq!(response.status(), 500);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "internal");
        let response = reqwest::get(format!("http://{addr}/ok")).await.unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn a_client_that_stops_mid_headers_is_closed_after_the_timeout() {
        let timeout = Duration::from_millis(300);
        let (addr, _shutdown, _server) = start(ServeOptions {
            header_read_timeout: timeout,
        })
        .await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        // The server closes; read_to_end returns (a generous bound guards a hang).
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut buf))
            .await
            .expect("the server never closed the half-sent request")
            .ok();
        assert!(started.elapsed() >= timeout.saturating_sub(Duration::from_millis(50)));
    }

    #[tokio::test]
    async fn shutdown_ends_the_server() {
        let (addr, shutdown, server) = start(ServeOptions::default()).await;
        assert_eq!(reqwest::get(format!("http://{addr}/ok")).await.unwrap().status(), 200);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
    }
}
