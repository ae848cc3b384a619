//! Every reader lives in a NATS account of its own, apart from the services': the
//! all-tenant `reader` in the account `reader`, each tenant reader in `reader-<tenant>`.
//! A reader account's JetStream holds mirrors of the watched streams (a tenant
//! reader's filtered to its tenant), fed across the account boundary from the
//! services' account.
//!
//! A consumer a reader creates, a deliver subject it names and a reply subject it
//! gives are all in its own account, whose JetStream holds nothing but copies: no
//! reader can make the server write into the services' subjects or another tenant's.
//! The services' account lets a reader account reach only its live subjects and what
//! its mirrors' source consumers need ([`crate::auth::render_conf_with`] renders those
//! exports and imports); the reader's own user may not use the latter.
//!
//! The layout step (the admin, in the services' account) creates the mirrors through
//! each reader account's JetStream API, which that account exports to the services'
//! account alone ([`ReaderAccount::api_prefix`]).

use async_nats::jetstream::{self, stream};
use paytrack_shared::{readers, subjects};

use crate::auth::{Permissions, Role, SERVICES_API_PREFIX, TenantReader};
use crate::{
    Layout, LayoutError, READER_CONSUMERS, READER_INACTIVE_LIMIT, READER_SOURCES, reader_stream, stream_configs,
};

/// A reader's account: the all-tenant reader's, or one tenant reader's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderAccount {
    /// The account `reader` of [`Role::Reader`]: every tenant's subjects.
    AllTenants,
    /// The account `reader-<tenant>` of a tenant reader: its tenant's subjects only.
    Tenant(TenantReader),
}

/// One mirror of a reader's account: the services' stream it copies and the subjects
/// it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderMirror {
    /// The services' stream it copies, e.g. `PAYTRACK_STATUS`.
    pub source: &'static str,
    /// Its name in the reader's account (e.g. `PAYTRACK_STATUS_READ`), the same in
    /// every reader's account, so a program reads either kind of reader the same way.
    pub name: String,
    /// The subjects of the source it keeps (a tenant's); empty for all of them.
    pub filters: Vec<String>,
}

/// The accounts of the all-tenant reader and of each of `tenants`' readers.
pub fn reader_accounts(tenants: &[TenantReader]) -> Vec<ReaderAccount> {
    let mut accounts = vec![ReaderAccount::AllTenants];
    accounts.extend(tenants.iter().cloned().map(ReaderAccount::Tenant));
    accounts
}

impl ReaderAccount {
    /// The account's name, the same as its one user's.
    pub fn name(&self) -> String {
        match self {
            ReaderAccount::AllTenants => Role::Reader.user().to_owned(),
            ReaderAccount::Tenant(reader) => reader.user(),
        }
    }

    /// The user's NATS name.
    pub fn user(&self) -> String {
        self.name()
    }

    /// The environment variable of the user's password in the nats-server process.
    pub fn password_env(&self) -> String {
        match self {
            ReaderAccount::AllTenants => Role::Reader.password_env().to_owned(),
            ReaderAccount::Tenant(reader) => reader.password_env(),
        }
    }

    /// What the user may publish and subscribe to inside its account.
    pub fn permissions(&self) -> Permissions {
        match self {
            ReaderAccount::AllTenants => Role::Reader.permissions(),
            ReaderAccount::Tenant(reader) => reader.permissions(),
        }
    }

    /// The prefix under which the services' account (the admin, for the layout step)
    /// reaches this account's JetStream API: `$JS.<account>.API`.
    pub fn api_prefix(&self) -> String {
        format!("$JS.{}.API", self.name())
    }

    /// The subjects, in the services' account, that the sources of this account's
    /// mirrors deliver to (`_MIRROR.<account>.…`); exported to this account only, and
    /// published to by no user.
    pub fn mirror_deliver_prefix(&self) -> String {
        format!("_MIRROR.{}", self.name())
    }

    /// The live subjects the account receives from the services' account.
    pub fn live_subjects(&self) -> Vec<String> {
        match self {
            ReaderAccount::AllTenants => [
                subjects::STATUS_ALL,
                subjects::CHECKPOINT_ALL,
                subjects::OUTCOME_ALL,
                subjects::ALERT_ALL,
            ]
            .map(str::to_owned)
            .to_vec(),
            ReaderAccount::Tenant(reader) => {
                let t = reader.tenant();
                vec![
                    readers::tenant_status(t),
                    readers::tenant_checkpoints(t),
                    readers::tenant_outcomes(t),
                    readers::tenant_alerts(t),
                ]
            }
        }
    }

    /// The account's mirrors, one per watched stream.
    pub fn mirrors(&self) -> Vec<ReaderMirror> {
        let filters = match self {
            ReaderAccount::AllTenants => Vec::new(),
            ReaderAccount::Tenant(reader) => readers::tenant_mirror_filters(reader.tenant()).to_vec(),
        };
        READER_SOURCES
            .iter()
            .map(|source| {
                let name = reader_stream(source);
                let filters = filters
                    .iter()
                    .find(|(mirror, _)| *mirror == name)
                    .map(|(_, filters)| filters.clone())
                    .unwrap_or_default();
                ReaderMirror { source, name, filters }
            })
            .collect()
    }

    /// The stream configurations of the account's mirrors: the source's retention and
    /// the limits of every readers' mirror (at most [`READER_CONSUMERS`] consumers,
    /// each deleted [`READER_INACTIVE_LIMIT`] after its last pull). A mirror keeps its
    /// source's sequences (a tenant's mirror has the other tenants' messages as
    /// holes), so positions read there are the source's.
    pub fn mirror_configs(&self, layout: &Layout) -> Vec<stream::Config> {
        let sources = stream_configs(layout);
        self.mirrors()
            .into_iter()
            .filter_map(|mirror| {
                let source = sources.iter().find(|c| c.name == mirror.source)?;
                Some(stream::Config {
                    name: mirror.name,
                    mirror: Some(stream::Source {
                        name: mirror.source.to_owned(),
                        external: Some(stream::External {
                            api_prefix: SERVICES_API_PREFIX.to_owned(),
                            delivery_prefix: Some(self.mirror_deliver_prefix()),
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
}

/// Creates or updates the mirrors of the all-tenant reader's account and of each of
/// `tenants`' accounts, as the admin (`client` connected in the services' account);
/// safe to repeat.
pub async fn apply_reader_layout(
    client: &async_nats::Client,
    layout: &Layout,
    tenants: &[TenantReader],
) -> Result<(), LayoutError> {
    for account in reader_accounts(tenants) {
        let js = jetstream::with_prefix(client.clone(), &account.api_prefix());
        for config in account.mirror_configs(layout) {
            let stream = format!("{} of {}", config.name, account.name());
            js.create_or_update_stream(config)
                .await
                .map_err(LayoutError::on_stream(stream))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use paytrack_shared::TenantId;

    use super::*;

    fn layout() -> Layout {
        crate::tests::test_layout(3)
    }

    #[test]
    fn a_tenant_readers_mirrors_keep_only_its_tenants_subjects() {
        let reader = TenantReader::new(TenantId::new("acme").unwrap()).unwrap();
        let configs = ReaderAccount::Tenant(reader).mirror_configs(&layout());
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

    #[test]
    fn the_all_tenant_readers_mirrors_copy_their_sources_whole_in_its_account() {
        let configs = ReaderAccount::AllTenants.mirror_configs(&layout());
        assert_eq!(configs.len(), READER_SOURCES.len());
        for (config, source) in configs.iter().zip(READER_SOURCES) {
            let mirror = config.mirror.as_ref().unwrap();
            assert_eq!(mirror.name, source);
            assert!(mirror.subject_transforms.is_empty() && mirror.filter_subject.is_none());
            assert_eq!(
                mirror.external.as_ref().and_then(|e| e.delivery_prefix.as_deref()),
                Some("_MIRROR.reader")
            );
        }
    }
}
