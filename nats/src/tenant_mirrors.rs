//! A tenant reader's history lives in its own NATS account: mirrors of the watched
//! streams there, filtered to the tenant, fed across the account boundary from the
//! services' account.
//!
//! A consumer a reader creates, a deliver subject it names and a reply subject it
//! gives are all in its own account, whose JetStream holds nothing but its tenant's
//! messages: no reader can make the server write into the services' subjects or
//! another tenant's. The services' account lets a reader account reach only what its
//! mirrors' source consumers need ([`crate::auth::render_conf_with`] renders those
//! exports and imports); the reader's own user may not use them.
//!
//! The layout step (the admin, in the services' account) creates the mirrors through
//! each reader account's JetStream API, which that account exports to the services'
//! account alone ([`crate::auth::TenantReader::api_prefix`]).

use async_nats::jetstream::{self, stream};
use paytrack_shared::readers;

use crate::auth::{SERVICES_API_PREFIX, TenantReader};
use crate::{
    Layout, LayoutError, READER_CONSUMERS, READER_INACTIVE_LIMIT, READER_SOURCES, reader_stream, stream_configs,
};

/// One mirror of a tenant reader's account: the services' stream it copies and the
/// subjects of the tenant it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantMirror {
    /// The services' stream it copies, e.g. `PAYTRACK_STATUS`.
    pub source: &'static str,
    /// Its name in the reader's account: the same as the all-tenant reader's mirror
    /// (e.g. `PAYTRACK_STATUS_READ`), so a program reads either the same way.
    pub name: String,
    /// The tenant's subjects of the source it keeps; no other message reaches it.
    pub filters: Vec<String>,
}

/// The mirrors of `reader`'s account, one per watched stream.
pub fn tenant_mirrors(reader: &TenantReader) -> Vec<TenantMirror> {
    let filters = readers::tenant_mirror_filters(reader.tenant());
    READER_SOURCES
        .iter()
        .filter_map(|source| {
            let name = reader_stream(source);
            filters
                .iter()
                .find(|(mirror, _)| *mirror == name)
                .map(|(_, filters)| TenantMirror {
                    source,
                    name: name.clone(),
                    filters: filters.clone(),
                })
        })
        .collect()
}

/// The stream configurations of `reader`'s mirrors: the source's retention and the
/// limits of every readers' mirror (at most [`READER_CONSUMERS`] consumers, each
/// deleted [`READER_INACTIVE_LIMIT`] after its last pull). A mirror keeps its
/// source's sequences (the other tenants' messages are holes), so positions read there
/// are the source's.
pub fn tenant_mirror_configs(layout: &Layout, reader: &TenantReader) -> Vec<stream::Config> {
    let sources = stream_configs(layout);
    tenant_mirrors(reader)
        .into_iter()
        .filter_map(|mirror| {
            let source = sources.iter().find(|c| c.name == mirror.source)?;
            Some(stream::Config {
                name: mirror.name,
                mirror: Some(stream::Source {
                    name: mirror.source.to_owned(),
                    external: Some(stream::External {
                        api_prefix: SERVICES_API_PREFIX.to_owned(),
                        delivery_prefix: Some(reader.mirror_deliver_prefix()),
                    }),
                    // Several filters are subject transforms onto themselves.
                    subject_transforms: mirror
                        .filters
                        .iter()
                        .map(|filter| stream::SubjectTransform {
                            source: filter.clone(),
                            destination: filter.clone(),
                        })
                        .collect(),
                    ..Default::default()
                }),
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                num_replicas: layout.replicas,
                max_age: source.max_age,
                allow_direct: true,
                deny_delete: true,
                max_consumers: READER_CONSUMERS,
                consumer_limits: Some(stream::ConsumerLimits {
                    inactive_threshold: READER_INACTIVE_LIMIT,
                    max_ack_pending: 0,
                }),
                ..Default::default()
            })
        })
        .collect()
}

/// Creates or updates the mirrors of every one of `readers` in its own account, as the
/// admin (`client` connected in the services' account); safe to repeat.
pub async fn apply_tenant_reader_layout(
    client: &async_nats::Client,
    layout: &Layout,
    readers: &[TenantReader],
) -> Result<(), LayoutError> {
    for reader in readers {
        let js = jetstream::with_prefix(client.clone(), &reader.api_prefix());
        for config in tenant_mirror_configs(layout, reader) {
            let stream = format!("{} of {}", config.name, reader.user());
            js.create_or_update_stream(config)
                .await
                .map_err(|e| LayoutError::Stream {
                    stream,
                    source: e.into(),
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use paytrack_shared::TenantId;

    use super::*;
    use crate::DuplicateWindows;

    #[test]
    fn a_tenant_readers_mirrors_keep_only_its_tenants_subjects() {
        let reader = TenantReader::new(TenantId::new("acme").unwrap()).unwrap();
        let layout = Layout {
            replicas: 3,
            windows: DuplicateWindows {
                inbound: Duration::from_secs(1),
                push: Duration::from_secs(1),
                internal: Duration::from_secs(1),
            },
            idempotency_ttl: Duration::from_secs(1),
            claims_max_age: Duration::from_secs(1),
        };
        let configs = tenant_mirror_configs(&layout, &reader);
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [readers::STATUS_MIRROR, readers::OUTCOME_MIRROR, readers::ALERT_MIRROR]
        );
        for config in &configs {
            let mirror = config.mirror.as_ref().unwrap();
            assert!(config.subjects.is_empty() && config.num_replicas == 3);
            assert_eq!(
                mirror.external.as_ref().map(|e| e.api_prefix.as_str()),
                Some(SERVICES_API_PREFIX)
            );
            assert!(!mirror.subject_transforms.is_empty());
            for transform in &mirror.subject_transforms {
                assert_eq!(transform.source, transform.destination);
                assert_eq!(transform.source.split('.').nth(2), Some("acme"), "{transform:?}");
            }
        }
    }
}
