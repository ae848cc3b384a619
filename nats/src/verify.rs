//! A service's check, at start, that the streams and buckets it runs on are laid out
//! as the code says: the layout is applied by the admin alone, and a stream someone
//! changed (a source rewriting session audit into transitions, other subjects, fewer
//! replicas, deletes allowed) must stop a service rather than be trusted.
//!
//! Each stream's configuration on the server is compared, field by field, with the
//! fields that decide what the stream holds and keeps: its subjects; that it has no
//! mirror, sources, subject transform or republish; its retention, storage, replicas,
//! age and per-subject limits, discard policy, duplicate window; that deletes are
//! denied (and purges, where the layout denies them); that it is not sealed and acks
//! its writes. The readers' mirrors live in the readers' accounts, which services do not
//! see. Descriptions, metadata and limits the server fills in are not compared.

use async_nats::jetstream::{self, stream};

use crate::{Layout, LayoutError, bucket_configs, buckets::bucket_stream, stream_configs};

/// Every stream of the layout as the server should hold it: the streams, then the
/// buckets' streams (`KV_<bucket>`).
pub fn layout_streams(layout: &Layout) -> Vec<stream::Config> {
    let mut streams = stream_configs(layout);
    streams.extend(bucket_configs(layout).iter().map(bucket_stream));
    streams
}

/// Checks every stream and bucket of `layout` on the server: [`LayoutError::Missing`]
/// while one does not exist yet, [`LayoutError::Wrong`] when one differs.
pub async fn verify_layout(js: &jetstream::Context, layout: &Layout) -> Result<(), LayoutError> {
    for expected in layout_streams(layout) {
        let found = match js.get_stream(&expected.name).await {
            Ok(handle) => handle.cached_info().config.clone(),
            Err(e) => {
                let missing = matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref js_error)
                        if js_error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                );
                return Err(if missing {
                    LayoutError::Missing { stream: expected.name }
                } else {
                    LayoutError::Read {
                        stream: expected.name,
                        source: e.into(),
                    }
                });
            }
        };
        let differences = differences(&expected, &found);
        if !differences.is_empty() {
            return Err(LayoutError::Wrong {
                stream: expected.name,
                differences: differences.join("; "),
            });
        }
    }
    Ok(())
}

/// The compared fields of `config`, by name, in a comparable rendering.
fn shape(config: &stream::Config) -> Vec<(&'static str, String)> {
    let mut subjects = config.subjects.clone();
    subjects.sort();
    vec![
        ("subjects", format!("{subjects:?}")),
        ("mirror", format!("{:?}", config.mirror)),
        ("sources", format!("{:?}", config.sources.clone().unwrap_or_default())),
        ("subject_transform", format!("{:?}", config.subject_transform)),
        ("republish", format!("{:?}", config.republish)),
        ("retention", format!("{:?}", config.retention)),
        ("storage", format!("{:?}", config.storage)),
        ("num_replicas", config.num_replicas.max(1).to_string()),
        ("max_age", format!("{:?}", config.max_age)),
        // Zero and -1 both mean unlimited (the server answers -1).
        (
            "max_messages_per_subject",
            config.max_messages_per_subject.max(0).to_string(),
        ),
        ("discard", format!("{:?}", config.discard)),
        ("deny_delete", config.deny_delete.to_string()),
        ("deny_purge", config.deny_purge.to_string()),
        ("sealed", config.sealed.to_string()),
        ("max_consumers", config.max_consumers.max(0).to_string()),
        (
            "consumer_limits",
            format!("{:?}", config.consumer_limits.clone().unwrap_or_default()),
        ),
        ("no_ack", config.no_ack.to_string()),
    ]
}

/// What differs between the layout's `expected` configuration and the `found` one,
/// as `field: expected …, found …`.
fn differences(expected: &stream::Config, found: &stream::Config) -> Vec<String> {
    let mut differences: Vec<String> = shape(expected)
        .into_iter()
        .zip(shape(found))
        .filter(|((_, want), (_, have))| want != have)
        .map(|((field, want), (_, have))| format!("{field}: expected {want}, found {have}"))
        .collect();
    // Zero means the server's default (buckets): only a window the layout sets is compared.
    if !expected.duplicate_window.is_zero() && expected.duplicate_window != found.duplicate_window {
        differences.push(format!(
            "duplicate_window: expected {:?}, found {:?}",
            expected.duplicate_window, found.duplicate_window
        ));
    }
    differences
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn layout() -> Layout {
        crate::tests::test_layout(1)
    }

    #[test]
    fn a_stream_as_laid_out_has_no_differences() {
        for config in layout_streams(&layout()) {
            assert!(differences(&config, &config).is_empty(), "{}", config.name);
        }
    }

    #[test]
    fn a_source_other_subjects_or_allowed_deletes_are_differences() {
        let status = layout_streams(&layout())
            .into_iter()
            .find(|c| c.name == paytrack_shared::subjects::STREAM_STATUS)
            .unwrap();
        let mut sourced = status.clone();
        sourced.sources = Some(vec![stream::Source {
            name: paytrack_shared::subjects::STREAM_SESSION.to_owned(),
            ..Default::default()
        }]);
        let mut wider = status.clone();
        wider.subjects.push("paytrack.session.>".to_owned());
        let mut deletable = status.clone();
        deletable.deny_delete = false;
        let mut forgetful = status.clone();
        forgetful.duplicate_window = Duration::from_secs(1);
        for (changed, field) in [
            (sourced, "sources"),
            (wider, "subjects"),
            (deletable, "deny_delete"),
            (forgetful, "duplicate_window"),
        ] {
            let found = differences(&status, &changed);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].starts_with(field), "{found:?}");
        }
    }

    #[test]
    fn every_bucket_is_in_the_layout_once() {
        let names: Vec<String> = layout_streams(&layout()).into_iter().map(|c| c.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for stream in [
            paytrack_shared::subjects::STREAM_IDEMPOTENCY,
            paytrack_shared::subjects::STREAM_COMMANDED,
            paytrack_shared::subjects::STREAM_PROVIDER_REFS,
            paytrack_shared::subjects::STREAM_CLAIMS,
            paytrack_shared::subjects::STREAM_SWEEP,
            paytrack_shared::subjects::STREAM_PRESENCE,
        ] {
            assert!(names.iter().any(|n| n == stream), "{stream} missing");
        }
    }
}
