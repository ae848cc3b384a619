//! Whether and where spans are exported over OTLP, decided once at start from the
//! standard OpenTelemetry variables and paytrack's own `otlp_endpoint` setting.
//!
//! Export is off unless an endpoint is named. The order, first match wins:
//! 1. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: off;
//! 2. the `otlp_endpoint` setting (`PAYTRACK_OTLP_ENDPOINT`), a collector's base URL;
//! 3. `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the traces URL used as given;
//! 4. `OTEL_EXPORTER_OTLP_ENDPOINT`, a base URL.
//!
//! A base URL gets `/v1/traces` appended (OTLP/HTTP's traces path). Spans are sent as
//! protobuf over HTTP by a batch processor on its own thread, so exporting never
//! blocks a request or a consumer. `OTEL_SERVICE_NAME` names the service when set,
//! else the binary's own name does; `OTEL_RESOURCE_ATTRIBUTES` and the batch
//! processor's `OTEL_BSP_*` variables are honoured as the SDK reads them.

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// OTLP/HTTP's path for traces, appended to a base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Why spans cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("OTLP endpoint {0:?} is not an http:// or https:// URL")]
    BadEndpoint(String),
    /// The exporter could not be built from the endpoint.
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Where spans go over OTLP; the default exports nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceExport {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://collector:4318/v1/traces`;
    /// `None`: spans stay in the process (trace ids still flow).
    pub traces_url: Option<String>,
    /// `service.name` of the exported spans; `None`: the binary's own name.
    pub service_name: Option<String>,
}

impl TraceExport {
    /// Export to the collector at `base_url` (its OTLP/HTTP root, e.g.
    /// `http://127.0.0.1:4318`).
    pub fn to_collector(base_url: &str) -> TraceExport {
        TraceExport {
            traces_url: Some(traces_url_of(base_url)),
            service_name: None,
        }
    }

    /// From the process's environment and the `otlp_endpoint` setting, in the order
    /// the module documents.
    pub fn resolve(otlp_endpoint: Option<&str>) -> TraceExport {
        Self::resolve_with(otlp_endpoint, |name| std::env::var(name).ok())
    }

    /// [`TraceExport::resolve`] with the environment read through `env` (tests).
    pub fn resolve_with(otlp_endpoint: Option<&str>, env: impl Fn(&str) -> Option<String>) -> TraceExport {
        let set = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let service_name = set("OTEL_SERVICE_NAME");
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if disabled {
            return TraceExport {
                traces_url: None,
                service_name,
            };
        }
        let traces_url = otlp_endpoint
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(traces_url_of)
            .or_else(|| set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| traces_url_of(&base)));
        TraceExport {
            traces_url,
            service_name,
        }
    }

    /// Whether spans leave the process.
    pub fn is_on(&self) -> bool {
        self.traces_url.is_some()
    }

    /// The tracer provider: with a batch OTLP exporter when export is on, else one
    /// that keeps span contexts (ids for logs and headers) and sends nothing.
    pub(super) fn provider(&self, service: &str) -> Result<SdkTracerProvider, ExportError> {
        let Some(url) = &self.traces_url else {
            return Ok(SdkTracerProvider::builder().build());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ExportError::BadEndpoint(url.clone()));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .build()?;
        let name = self.service_name.clone().unwrap_or_else(|| service.to_owned());
        Ok(SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(name).build())
            .with_batch_exporter(exporter)
            .build())
    }
}

/// `base` with OTLP/HTTP's traces path appended (one slash between).
fn traces_url_of(base: &str) -> String {
    format!("{}{TRACES_PATH}", base.trim().trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_named() {
        assert_eq!(TraceExport::resolve_with(None, env_of(&[])), TraceExport::default());
        assert!(!TraceExport::resolve_with(Some(" "), env_of(&[])).is_on());
    }

    /// The setting, the environment, and the traces URL they resolve to.
    type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], Option<&'a str>);

    #[test]
    fn endpoints_resolve_in_the_documented_order() {
        let cases: &[Case] = &[
            (Some("http://a:4318"), &[], Some("http://a:4318/v1/traces")),
            (Some("http://a:4318/"), &[], Some("http://a:4318/v1/traces")),
            (
                None,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b:4318")],
                Some("http://b:4318/v1/traces"),
            ),
            (
                None,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/traces"),
                ],
                Some("http://c:9999/traces"),
            ),
            (
                Some("http://a:4318"),
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b:4318")],
                Some("http://a:4318/v1/traces"),
            ),
            (Some("http://a:4318"), &[("OTEL_SDK_DISABLED", "true")], None),
            (
                None,
                &[
                    ("OTEL_TRACES_EXPORTER", "none"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://b:4318"),
                ],
                None,
            ),
        ];
        for (setting, env, expected) in cases {
            let export = TraceExport::resolve_with(*setting, env_of(env));
            assert_eq!(
                export.traces_url.as_deref(),
                *expected,
                "setting {setting:?}, env {env:?}"
            );
        }
    }

    #[test]
    fn the_standard_service_name_wins() {
        let export = TraceExport::resolve_with(Some("http://a:4318"), env_of(&[("OTEL_SERVICE_NAME", "payments-eu")]));
        assert_eq!(export.service_name.as_deref(), Some("payments-eu"));
    }

    #[test]
    fn a_non_http_endpoint_is_refused() {
        let export = TraceExport {
            traces_url: Some("collector:4318/v1/traces".into()),
            service_name: None,
        };
        assert!(matches!(export.provider("x"), Err(ExportError::BadEndpoint(_))));
    }
}
