//! Who may publish and subscribe to what on paytrack's NATS: one user per service,
//! read-only users for internal services, and an admin user for operators and tests.
//!
//! This module is the one source of the permissions. [`render_conf`] turns it into
//! the nats-server `accounts` block checked in as `nats/auth.conf` (included by
//! `nats/local.conf`, the local stack) and `k8s/nats-auth.conf` (the Kubernetes base);
//! the test harness starts its servers with the same text. A unit test fails when a
//! checked-in copy is stale; `PAYTRACK_UPDATE_DOCS=1 cargo test -p paytrack-nats`
//! rewrites them. Passwords are never in the files: each user's password is the
//! environment variable [`Role::password_env`] of the nats-server process, so a server
//! without them refuses to start.
//!
//! The services and the admin share the account [`SERVICES_ACCOUNT`], whose
//! JetStream holds the layout. Each user gets exactly the JetStream API subjects its
//! service uses: stream info of the layout, which every service verifies at start
//! (only the admin creates, updates, deletes or purges a stream or bucket:
//! [`crate::apply_layout`]), its own durable consumers (info, create, pull, ack), and,
//! for readers of history, direct and stream gets and ordered consumers (never
//! another service's durable). Replies come to a per-user inbox prefix
//! ([`Role::inbox_prefix`]), so no user sees another's replies.
//!
//! Every reader lives alone in an account of its own ([`crate::reader_accounts`]):
//! the all-tenant `reader` in `reader`, a [`TenantReader`] (generated per tenant:
//! `paytrack nats-auth --tenant-reader <tenant>`) in `reader-<tenant>`. Its account's
//! JetStream holds mirrors of the watched streams (a tenant reader's: its tenant's
//! subjects only), and whatever it makes the server write (an answer to the reply
//! subject of a request, a push consumer's deliveries) stays in that account, so no
//! reader can write into the services' subjects or another tenant's. The services'
//! account exports to a reader's account its live subjects and only the consumer
//! calls its mirrors' sources need, which the reader's user may not publish to. A
//! reader creates consumers only on its mirrors, whose limits delete any consumer
//! five minutes after its last pull and cap their number
//! ([`crate::READER_CONSUMERS`]). A tenant reader subscribes only to its tenant's live
//! subjects and creates consumers only in the form that names the filter
//! (`$JS.API.CONSUMER.CREATE.<mirror>.<name>.<filter>`, whose filter the server checks
//! against the consumer's), with a filter inside its tenant; it has no direct or
//! stream gets and no stream info, and its own inbox prefix.

use std::fmt::Write as _;

use paytrack_shared::config::Settings;
use paytrack_shared::{TenantId, readers, subjects};

use crate::reader_accounts::{ReaderAccount, reader_accounts};
use secrecy::SecretString;

/// A NATS user of paytrack, by the job it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// ingest: records facts and push events.
    Ingest,
    /// The reconciler: the only writer of transitions.
    Reconciler,
    /// The ledger-projector: the only writer of checkpoints.
    Projector,
    /// ws-edge: reads channel histories, writes session audit.
    Edge,
    /// Internal services that watch statuses: read-only.
    Reader,
    /// Operators and the test harness: everything.
    Admin,
}

impl Role {
    /// Every role, in the order of the rendered configuration.
    pub const ALL: [Role; 6] = [
        Role::Ingest,
        Role::Reconciler,
        Role::Projector,
        Role::Edge,
        Role::Reader,
        Role::Admin,
    ];

    /// The NATS user name.
    pub fn user(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Reconciler => "reconciler",
            Role::Projector => "ledger-projector",
            Role::Edge => "ws-edge",
            Role::Reader => readers::ALL_TENANTS_READER_USER,
            Role::Admin => "admin",
        }
    }

    /// The environment variable holding the user's password, for nats-server (in the
    /// configuration) and for paytrack (the setting of the same name).
    pub fn password_env(self) -> &'static str {
        match self {
            Role::Ingest => "PAYTRACK_NATS_INGEST_PASSWORD",
            Role::Reconciler => "PAYTRACK_NATS_RECONCILER_PASSWORD",
            Role::Projector => "PAYTRACK_NATS_PROJECTOR_PASSWORD",
            Role::Edge => "PAYTRACK_NATS_EDGE_PASSWORD",
            Role::Reader => "PAYTRACK_NATS_READER_PASSWORD",
            Role::Admin => "PAYTRACK_NATS_ADMIN_PASSWORD",
        }
    }

    /// The inbox prefix the user's replies come to. The reader keeps a standard
    /// client's default, `_INBOX`; every other user (the admin too) has its own first
    /// token, `_INBOX_<user>`, which `_INBOX.>` does not match, so the reader never
    /// sees another user's replies.
    pub fn inbox_prefix(self) -> String {
        match self {
            Role::Reader => "_INBOX".to_owned(),
            other => format!("_INBOX_{}", other.user()),
        }
    }

    /// The credentials the settings give this role's service, if any.
    pub fn credentials(self, settings: &Settings) -> Option<Credentials> {
        let password = match self {
            Role::Ingest => &settings.nats_ingest_password,
            Role::Reconciler => &settings.nats_reconciler_password,
            Role::Projector => &settings.nats_projector_password,
            Role::Edge => &settings.nats_edge_password,
            Role::Admin => &settings.nats_admin_password,
            Role::Reader => return None,
        };
        password.clone().map(|password| Credentials { role: self, password })
    }

    /// What the user may publish and subscribe to.
    pub fn permissions(self) -> Permissions {
        let mut p = Permissions::default();
        if self == Role::Admin {
            p.publish.push(">".into());
            p.subscribe.push(">".into());
            // The readers' inbox: the admin's replies come to its own prefix, so a
            // reader never sees them (and the admin never reads a reader's).
            p.subscribe_deny.push(format!("{}.>", Role::Reader.inbox_prefix()));
            return p;
        }
        p.subscribe.push(format!("{}.>", self.inbox_prefix()));
        match self {
            Role::Ingest => {
                p.publish.extend([subjects::IN_ALL.into(), subjects::PUSH_ALL.into()]);
                // Operators' acknowledgements of alerts, recorded as facts.
                p.publish.push(format!("paytrack.alert.*.{}", subjects::ALERT_ACK));
                p.verify_layout();
                // KV buckets ingest writes and reads back: idempotency keys, commanded
                // payments, and provider references (with the events parked until
                // their payment is known).
                for (stream, writes) in [
                    (subjects::STREAM_IDEMPOTENCY, subjects::IDEMPOTENCY_ALL),
                    (subjects::STREAM_COMMANDED, subjects::COMMANDED_ALL),
                    (subjects::STREAM_PROVIDER_REFS, subjects::PROVIDER_REFS_ALL),
                ] {
                    p.publish.push(writes.into());
                    p.history(stream, &[]);
                }
                // Routing reads terminal transitions (one ordered consumer) and a
                // payment's newest transition for commands on it.
                p.history(subjects::STREAM_STATUS, &[]);
            }
            Role::Reconciler => {
                p.publish.extend([
                    subjects::STATUS_ALL.into(),
                    subjects::OUTCOME_ALL.into(),
                    subjects::ALERT_ALL.into(),
                    subjects::DEAD_ALL.into(),
                ]);
                p.verify_layout();
                p.durable(subjects::STREAM_IN, crate::CONSUMER_RECONCILER);
                p.history(subjects::STREAM_STATUS, &[]);
                // Stuck-payment sweeps: a status-query answer is recorded as an
                // inbound fact (so evidence and de-duplication work as for any
                // fact), and the sweep's KV bucket is written and scanned.
                p.publish.extend([subjects::IN_ALL.into(), subjects::SWEEP_ALL.into()]);
                p.history(subjects::STREAM_SWEEP, &[]);
                // Payment claims: which merchant's subject holds each payment's history.
                p.publish.push(subjects::CLAIMS_ALL.into());
                p.history(subjects::STREAM_CLAIMS, &[]);
            }
            Role::Projector => {
                p.publish.extend([
                    subjects::CHECKPOINT_ALL.into(),
                    subjects::ALERT_ALL.into(),
                    subjects::DEAD_ALL.into(),
                ]);
                p.verify_layout();
                p.durable(subjects::STREAM_STATUS, crate::CONSUMER_PROJECTOR_STATUS);
                p.durable(subjects::STREAM_IN, crate::CONSUMER_PROJECTOR_EVIDENCE);
                p.durable(subjects::STREAM_SESSION, crate::CONSUMER_PROJECTOR_SESSIONS);
                p.durable(subjects::STREAM_OUTCOME, crate::CONSUMER_PROJECTOR_OUTCOMES);
                p.durable(subjects::STREAM_ALERT, crate::CONSUMER_PROJECTOR_ALERTS);
                // `paytrack-rebuild` replays every stream it projects with ordered consumers.
                let own = [
                    crate::CONSUMER_PROJECTOR_STATUS,
                    crate::CONSUMER_PROJECTOR_EVIDENCE,
                    crate::CONSUMER_PROJECTOR_SESSIONS,
                    crate::CONSUMER_PROJECTOR_OUTCOMES,
                    crate::CONSUMER_PROJECTOR_ALERTS,
                ];
                for stream in [
                    subjects::STREAM_STATUS,
                    subjects::STREAM_IN,
                    subjects::STREAM_OUTCOME,
                    subjects::STREAM_SESSION,
                    subjects::STREAM_ALERT,
                ] {
                    p.history(stream, &own);
                }
            }
            Role::Edge => {
                p.publish
                    .extend([subjects::SESSION_ALL.into(), subjects::PRESENCE_ALL.into()]);
                p.verify_layout();
                p.history(subjects::STREAM_STATUS, &[]);
                p.history(subjects::STREAM_PUSH, &[]);
                // The `alerts` channel reads the tenant's alerts as they are raised.
                p.history(subjects::STREAM_ALERT, &[]);
                // Presence: the KV bucket is written and read back.
                p.history(subjects::STREAM_PRESENCE, &[]);
            }
            Role::Reader => {
                p.subscribe.extend([
                    subjects::STATUS_ALL.into(),
                    subjects::CHECKPOINT_ALL.into(),
                    subjects::OUTCOME_ALL.into(),
                    subjects::ALERT_ALL.into(),
                ]);
                // The lookups a standard client makes: the account, stream names.
                p.publish.extend([api("INFO"), api("STREAM.NAMES")]);
                // In its own account: info of and history (consumers that expire)
                // from the mirrors of the watched streams, which its account's
                // JetStream holds.
                for stream in crate::READER_SOURCES {
                    let mirror = crate::reader_stream(stream);
                    p.publish.push(api(&format!("STREAM.INFO.{mirror}")));
                    p.history(&mirror, &[]);
                }
            }
            Role::Admin => {}
        }
        p
    }
}

/// Every durable consumer of the layout, by stream: readers of a stream's history
/// are denied the ones they do not own.
const DURABLES: [(&str, &str); 6] = [
    (subjects::STREAM_ALERT, crate::CONSUMER_PROJECTOR_ALERTS),
    (subjects::STREAM_IN, crate::CONSUMER_RECONCILER),
    (subjects::STREAM_STATUS, crate::CONSUMER_PROJECTOR_STATUS),
    (subjects::STREAM_IN, crate::CONSUMER_PROJECTOR_EVIDENCE),
    (subjects::STREAM_SESSION, crate::CONSUMER_PROJECTOR_SESSIONS),
    (subjects::STREAM_OUTCOME, crate::CONSUMER_PROJECTOR_OUTCOMES),
];

fn api(rest: &str) -> String {
    format!("$JS.API.{rest}")
}

/// A read-only NATS user that sees one tenant only: internal services of a tenant (or
/// a partner's integration) read that tenant's statuses, outcomes and alerts and
/// nothing of any other tenant's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReader {
    tenant: TenantId,
}

/// The prefix of a tenant reader's password variable; the tenant follows, escaped.
const TENANT_READER_PASSWORD_PREFIX: &str = "PAYTRACK_NATS_READER_PASSWORD_";

/// Why there can be no reader of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantReaderError {
    /// `_` stands for "no tenant" in subjects (alerts about messages whose subject names
    /// none, every tenant's): a reader of it would read those.
    #[error(
        "`{}` is not a tenant: alerts about messages of no known tenant use it",
        subjects::NO_TENANT
    )]
    NoTenant,
}

impl TenantReader {
    /// The reader of `tenant`; refused for `_`, which subjects use for no tenant.
    pub fn new(tenant: TenantId) -> Result<TenantReader, TenantReaderError> {
        if tenant.as_str() == subjects::NO_TENANT {
            return Err(TenantReaderError::NoTenant);
        }
        Ok(TenantReader { tenant })
    }

    /// Whose reader it is.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The NATS user name, `reader-<tenant>`.
    pub fn user(&self) -> String {
        readers::tenant_reader_user(&self.tenant)
    }

    /// The environment variable holding the user's password in the nats-server
    /// process: `PAYTRACK_NATS_READER_PASSWORD_<tenant>`, where `_` is written `_5F`
    /// and `-` is written `_2D` (a variable name holds neither `-` nor, unambiguously,
    /// a tenant's own `_`), so two tenants never share a variable.
    pub fn password_env(&self) -> String {
        let mut name = String::from(TENANT_READER_PASSWORD_PREFIX);
        for c in self.tenant.as_str().chars() {
            match c {
                '_' => name.push_str("_5F"),
                '-' => name.push_str("_2D"),
                c => name.push(c),
            }
        }
        name
    }

    /// The inbox prefix its replies come to, `_INBOX_reader-<tenant>`: its own, so no
    /// other reader sees the history it pulls.
    pub fn inbox_prefix(&self) -> String {
        readers::tenant_reader_inbox(&self.tenant)
    }

    /// The NATS account the reader lives in, alone, named like its user: its
    /// JetStream holds the tenant's mirrors ([`crate::reader_accounts`]), and whatever
    /// the reader makes the server write (an answer to a reply subject it names, a
    /// push consumer's deliveries) stays in it.
    pub fn account(&self) -> String {
        self.user()
    }

    /// The prefix under which the services' account (the admin, for the layout step)
    /// reaches this reader's account's JetStream API: `$JS.reader-<tenant>.API`.
    pub fn api_prefix(&self) -> String {
        ReaderAccount::Tenant(self.clone()).api_prefix()
    }

    /// The subjects, in the services' account, that the sources of this reader's
    /// mirrors deliver to; exported to its account only, and published to by no user.
    pub fn mirror_deliver_prefix(&self) -> String {
        ReaderAccount::Tenant(self.clone()).mirror_deliver_prefix()
    }

    /// What the user may publish and subscribe to: its tenant's live subjects, and
    /// consumers on the readers' mirrors filtered inside its tenant.
    pub fn permissions(&self) -> Permissions {
        let mut p = Permissions::default();
        let t = &self.tenant;
        p.subscribe.extend([
            format!("{}.>", self.inbox_prefix()),
            readers::tenant_status(t),
            readers::tenant_checkpoints(t),
            readers::tenant_outcomes(t),
            readers::tenant_alerts(t),
        ]);
        // The lookups a client makes: the account, stream names (no subjects in them).
        p.publish.extend([api("INFO"), api("STREAM.NAMES")]);
        for (mirror, filters) in readers::tenant_mirror_filters(t) {
            // Only the create that names its filter: the server refuses it when the
            // consumer's filter is another. The nameless and the unfiltered creates
            // (any filter, or none) are not allowed.
            for filter in filters {
                p.publish.push(api(&format!("CONSUMER.CREATE.{mirror}.*.{filter}")));
            }
            // Its own consumers, by their (random) names: pull, look up, delete.
            p.publish.extend([
                api(&format!("CONSUMER.INFO.{mirror}.*")),
                api(&format!("CONSUMER.MSG.NEXT.{mirror}.*")),
                api(&format!("CONSUMER.DELETE.{mirror}.*")),
                format!("$JS.FC.{mirror}.>"),
            ]);
        }
        p
    }
}

/// Subjects a user may publish to (allow and deny) and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Publish allow list.
    pub publish: Vec<String>,
    /// Publish deny list (wins over the allow list).
    pub publish_deny: Vec<String>,
    /// Subscribe allow list.
    pub subscribe: Vec<String>,
    /// Subscribe deny list (wins over the allow list).
    pub subscribe_deny: Vec<String>,
}

impl Permissions {
    /// Info of every stream and bucket of the layout, which each service verifies at
    /// start. Never create, update, delete or purge: that is the admin's layout step.
    fn verify_layout(&mut self) {
        let any = crate::Layout {
            replicas: 1,
            windows: crate::DuplicateWindows {
                inbound: std::time::Duration::ZERO,
                push: std::time::Duration::ZERO,
                internal: std::time::Duration::ZERO,
            },
            idempotency_ttl: std::time::Duration::ZERO,
            claims_max_age: std::time::Duration::ZERO,
        };
        for config in crate::layout_streams(&any) {
            self.publish.push(api(&format!("STREAM.INFO.{}", config.name)));
        }
    }

    /// A durable pull consumer the user owns: get or create it, pull, acknowledge,
    /// rewind.
    fn durable(&mut self, stream: &str, name: &str) {
        self.publish.extend([
            api(&format!("CONSUMER.INFO.{stream}.{name}")),
            api(&format!("CONSUMER.CREATE.{stream}.{name}")),
            api(&format!("CONSUMER.CREATE.{stream}.{name}.>")),
            api(&format!("CONSUMER.MSG.NEXT.{stream}.{name}")),
            // Rewinding it when its position is past the stream's end (`overrun`).
            api(&format!("CONSUMER.RESET.{stream}.{name}")),
            format!("$JS.ACK.{stream}.{name}.>"),
        ]);
    }

    /// Reading a stream's history: gets of its messages and ordered consumers
    /// (create, pull, delete and re-create on reset); never another service's
    /// durable, except the user's own (`own`). An ordered consumer is created
    /// nameless (`$JS.API.CONSUMER.CREATE.<stream>`) and re-created under a name
    /// (`<name>_<n>`), so named creates are allowed too: a subject cannot tell an
    /// ephemeral from a durable there, which is why readers create consumers only on
    /// their mirrors, whose limits make every consumer expire.
    fn history(&mut self, stream: &str, own: &[&str]) {
        self.publish.extend([
            api(&format!("STREAM.MSG.GET.{stream}")),
            api(&format!("DIRECT.GET.{stream}")),
            api(&format!("DIRECT.GET.{stream}.>")),
            api(&format!("CONSUMER.CREATE.{stream}")),
            api(&format!("CONSUMER.CREATE.{stream}.*")),
            api(&format!("CONSUMER.CREATE.{stream}.*.>")),
            api(&format!("CONSUMER.INFO.{stream}.*")),
            api(&format!("CONSUMER.MSG.NEXT.{stream}.*")),
            api(&format!("CONSUMER.DELETE.{stream}.*")),
            // Flow-control replies of ordered consumers and KV watches.
            format!("$JS.FC.{stream}.>"),
        ]);
        for (s, durable) in DURABLES {
            if s == stream && !own.contains(&durable) {
                for verb in ["CREATE", "DELETE", "MSG.NEXT"] {
                    self.publish_deny
                        .push(api(&format!("CONSUMER.{verb}.{stream}.{durable}")));
                }
                self.publish_deny
                    .push(api(&format!("CONSUMER.CREATE.{stream}.{durable}.>")));
            }
        }
    }
}

/// A service's NATS user and password.
#[derive(Clone)]
pub struct Credentials {
    /// Whose credentials.
    pub role: Role,
    /// The password (never logged).
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.role.user()).finish()
    }
}

/// The nats-server `accounts` block for every role, passwords referenced as
/// environment variables: the configuration without tenant readers (Kubernetes, the
/// test harness).
pub fn render_conf() -> String {
    render_conf_with(&[])
}

/// The tenants the local stack (`make up`) has readers for: its default `DEV_TENANT`
/// and `OTHER_TENANT`, so isolation between two tenants can be tried by hand.
pub const LOCAL_TENANT_READERS: [&str; 2] = ["dev", "other"];

/// The `accounts` block: the services' account with every role but the reader, the
/// all-tenant reader's account, and an account of its own for each of `tenants`
/// (`paytrack nats-auth --tenant-reader <tenant>`) with its reader, whose password is
/// its own variable ([`TenantReader::password_env`]). The accounts are linked by
/// exactly what [`crate::reader_accounts`] describes.
pub fn render_conf_with(tenants: &[TenantReader]) -> String {
    let mut out = String::from(
        "# NATS accounts, users and permissions of paytrack. GENERATED from nats/src/auth.rs:\n\
         # do not edit; `cargo test -p paytrack-nats` fails when this copy is stale and\n\
         # `PAYTRACK_UPDATE_DOCS=1 cargo test -p paytrack-nats` rewrites it.\n\
         # Each password is an environment variable of the nats-server process (letters and\n\
         # digits, starting with a letter); the server refuses to start without it.\n\
         # The services share one account; each reader has an account of its own, whose\n\
         # JetStream holds the mirrors it reads (a tenant reader's: its tenant's only).\n\
         accounts {\n",
    );
    let accounts = reader_accounts(tenants);
    let (exports, imports) = services_links(&accounts);
    let _ = writeln!(out, "  {SERVICES_ACCOUNT}: {{");
    out.push_str("    jetstream: enabled\n    users: [\n");
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Reader) {
        render_user(&mut out, role.user(), role.password_env(), &role.permissions());
    }
    out.push_str("    ]\n");
    render_links(&mut out, &exports, &imports);
    out.push_str("  }\n");
    for account in &accounts {
        let _ = writeln!(out, "  \"{}\": {{", account.name());
        out.push_str("    jetstream: enabled\n    users: [\n");
        render_user(
            &mut out,
            &account.user(),
            &account.password_env(),
            &account.permissions(),
        );
        out.push_str("    ]\n");
        render_links(&mut out, &reader_exports(), &reader_imports(account));
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// The name of the account of paytrack's services and the admin: the streams and
/// buckets of the layout live in its JetStream.
pub const SERVICES_ACCOUNT: &str = "paytrack";

/// The prefix under which a reader's account reaches the services' account's
/// JetStream API: only the consumer creates of its mirrors' sources are imported there.
pub const SERVICES_API_PREFIX: &str = "$JS.paytrack.API";

/// What crosses an account boundary: a stream carries messages published in the
/// exporting account to the importer; a service carries the importer's requests to
/// the exporter and its answers back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stream,
    Service,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Service => "service",
        }
    }
}

/// A subject an account offers to the accounts named.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Export {
    kind: Kind,
    subject: String,
    accounts: Vec<String>,
}

/// A subject an account takes from another, under `local` when it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    kind: Kind,
    account: String,
    subject: String,
    local: Option<String>,
}

/// The services' account's exports (each subject once, with every account that may
/// import it) and imports, for the readers' `accounts`: whatever a reader's account
/// imports, and the admin's way into each reader account's JetStream.
fn services_links(accounts: &[ReaderAccount]) -> (Vec<Export>, Vec<Import>) {
    let mut exports: Vec<Export> = Vec::new();
    let mut imports = Vec::new();
    for account in accounts {
        for import in reader_imports(account) {
            match exports
                .iter_mut()
                .find(|e| e.kind == import.kind && e.subject == import.subject)
            {
                Some(export) => export.accounts.push(account.name()),
                None => exports.push(Export {
                    kind: import.kind,
                    subject: import.subject,
                    accounts: vec![account.name()],
                }),
            }
        }
        imports.push(Import {
            kind: Kind::Service,
            account: account.name(),
            subject: api(">"),
            local: Some(format!("{}.>", account.api_prefix())),
        });
    }
    (exports, imports)
}

/// A reader's account's export: its JetStream API, to the services' account only
/// (the layout step creates its mirrors through it).
fn reader_exports() -> Vec<Export> {
    vec![Export {
        kind: Kind::Service,
        subject: api(">"),
        accounts: vec![SERVICES_ACCOUNT.to_owned()],
    }]
}

/// A reader's account's imports from the services' account: its live subjects, and
/// for its mirrors the consumer creates on their sources (under [`SERVICES_API_PREFIX`],
/// which its user may not publish to), their flow-control replies and their
/// deliveries (under [`ReaderAccount::mirror_deliver_prefix`]).
fn reader_imports(account: &ReaderAccount) -> Vec<Import> {
    let stream = |subject: String| Import {
        kind: Kind::Stream,
        account: SERVICES_ACCOUNT.to_owned(),
        subject,
        local: None,
    };
    let mut imports: Vec<Import> = account.live_subjects().into_iter().map(stream).collect();
    imports.push(stream(format!("{}.>", account.mirror_deliver_prefix())));
    for mirror in account.mirrors() {
        let source = mirror.source;
        // Creates only: a mirror's consumer on its source that is not deleted expires
        // by itself once the mirror stops pulling from it.
        for call in [
            format!("CONSUMER.CREATE.{source}"),
            format!("CONSUMER.CREATE.{source}.>"),
        ] {
            imports.push(Import {
                kind: Kind::Service,
                account: SERVICES_ACCOUNT.to_owned(),
                subject: api(&call),
                local: Some(format!("{SERVICES_API_PREFIX}.{call}")),
            });
        }
        imports.push(Import {
            kind: Kind::Service,
            account: SERVICES_ACCOUNT.to_owned(),
            subject: format!("$JS.FC.{source}.>"),
            local: None,
        });
    }
    imports
}

/// Appends an account's `exports` and `imports` lists (each only when not empty).
fn render_links(out: &mut String, exports: &[Export], imports: &[Import]) {
    if !exports.is_empty() {
        out.push_str("    exports: [\n");
        for export in exports {
            let accounts: Vec<String> = export.accounts.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(
                out,
                "      {{ {}: \"{}\", accounts: [{}] }}",
                export.kind.key(),
                export.subject,
                accounts.join(", ")
            );
        }
        out.push_str("    ]\n");
    }
    if !imports.is_empty() {
        out.push_str("    imports: [\n");
        for import in imports {
            let to = import
                .local
                .as_ref()
                .map(|local| format!(", to: \"{local}\""))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "      {{ {}: {{ account: \"{}\", subject: \"{}\" }}{to} }}",
                import.kind.key(),
                import.account,
                import.subject
            );
        }
        out.push_str("    ]\n");
    }
}

/// Appends one user's entry of the `users` list.
fn render_user(out: &mut String, user: &str, password_env: &str, p: &Permissions) {
    let list = |subjects: &[String], indent: &str| {
        let items: Vec<String> = subjects.iter().map(|s| format!("{indent}  \"{s}\"\n")).collect();
        format!("[\n{}{indent}]", items.concat())
    };
    let _ = writeln!(out, "      {{");
    let _ = writeln!(out, "        user: \"{user}\"");
    let _ = writeln!(out, "        password: ${password_env}");
    let _ = writeln!(out, "        permissions: {{");
    let _ = writeln!(out, "          publish: {{");
    let _ = writeln!(out, "            allow: {}", list(&p.publish, "            "));
    if !p.publish_deny.is_empty() {
        let _ = writeln!(out, "            deny: {}", list(&p.publish_deny, "            "));
    }
    let _ = writeln!(out, "          }}");
    let _ = writeln!(out, "          subscribe: {{");
    let _ = writeln!(out, "            allow: {}", list(&p.subscribe, "            "));
    if !p.subscribe_deny.is_empty() {
        let _ = writeln!(out, "            deny: {}", list(&p.subscribe_deny, "            "));
    }
    let _ = writeln!(out, "          }}");
    let _ = writeln!(out, "        }}");
    let _ = writeln!(out, "      }}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_copies_match_the_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let local: Vec<TenantReader> = LOCAL_TENANT_READERS
            .iter()
            .map(|t| TenantReader::new(TenantId::new(t).unwrap()).unwrap())
            .collect();
        for (path, rendered) in [
            ("nats/auth.conf", render_conf_with(&local)),
            ("k8s/nats-auth.conf", render_conf()),
        ] {
            let path = root.join(path);
            if std::env::var_os("PAYTRACK_UPDATE_DOCS").is_some() {
                std::fs::write(&path, &rendered).unwrap();
            }
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                current == rendered,
                "{} is stale; run PAYTRACK_UPDATE_DOCS=1 cargo test -p paytrack-nats",
                path.display()
            );
        }
    }

    #[test]
    fn only_the_reconciler_writes_transitions_and_only_the_projector_checkpoints() {
        let may = |role: Role, subject: &str| role.permissions().publish.iter().any(|s| s == subject);
        for role in [Role::Ingest, Role::Projector, Role::Edge, Role::Reader] {
            assert!(!may(role, subjects::STATUS_ALL), "{role:?}");
        }
        for role in [Role::Ingest, Role::Reconciler, Role::Edge, Role::Reader] {
            assert!(!may(role, subjects::CHECKPOINT_ALL), "{role:?}");
        }
        assert!(may(Role::Reconciler, subjects::STATUS_ALL));
        assert!(may(Role::Projector, subjects::CHECKPOINT_ALL));
        assert!(
            Role::Reader
                .permissions()
                .publish
                .iter()
                .all(|s| s.starts_with("$JS.API.") || s.starts_with("$JS.FC.")),
            "the reader publishes only API requests and flow-control replies"
        );
    }

    fn reader(tenant: &str) -> TenantReader {
        TenantReader::new(TenantId::new(tenant).unwrap()).unwrap()
    }

    #[test]
    fn two_tenants_never_share_a_readers_password_variable() {
        let names = ["acme", "a-b", "a_b", "a_2Db", "a_5Fb", "A-B"].map(|t| reader(t).password_env());
        for (i, a) in names.iter().enumerate() {
            assert!(
                a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{a} is not a variable name"
            );
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(reader("acme").password_env(), "PAYTRACK_NATS_READER_PASSWORD_acme");
        assert_eq!(
            TenantReader::new(TenantId::new(subjects::NO_TENANT).unwrap()),
            Err(TenantReaderError::NoTenant),
            "no reader of every tenant's unattributed alerts"
        );
    }

    #[test]
    fn a_tenant_reader_creates_only_filtered_consumers_inside_its_tenant() {
        let p = reader("acme").permissions();
        for subject in &p.publish {
            assert!(
                subject.starts_with("$JS.API.") || subject.starts_with("$JS.FC."),
                "{subject}"
            );
            assert!(
                !subject.contains("GET") && !subject.contains("STREAM.INFO"),
                "{subject}"
            );
            if let Some(rest) = subject.strip_prefix("$JS.API.CONSUMER.CREATE.") {
                let filter = rest.splitn(3, '.').nth(2).unwrap_or_default();
                assert!(
                    filter.starts_with("paytrack.") && filter.split('.').nth(2) == Some("acme"),
                    "{subject} does not name a filter of the tenant"
                );
            }
        }
        for subject in &p.subscribe {
            assert!(
                subject.starts_with("_INBOX_reader-acme.") || subject.split('.').nth(2) == Some("acme"),
                "{subject}"
            );
        }
        assert!(render_conf_with(&[reader("acme")]).contains("user: \"reader-acme\""));
    }

    #[test]
    fn a_tenant_readers_account_imports_only_its_tenants_subjects_and_its_user_not_the_services_api() {
        let acme = reader("acme");
        for import in reader_imports(&ReaderAccount::Tenant(acme.clone())) {
            assert_eq!(import.account, SERVICES_ACCOUNT);
            match import.kind {
                // Messages that reach the account: the tenant's, or its mirrors' feed.
                Kind::Stream => assert!(
                    import.subject.split('.').nth(2) == Some("acme")
                        || import.subject.starts_with(&acme.mirror_deliver_prefix()),
                    "{import:?}"
                ),
                // Requests that leave it: its mirrors' consumer creates on the
                // sources, under a prefix, and their flow-control replies.
                Kind::Service => assert!(
                    import
                        .local
                        .as_deref()
                        .is_some_and(|l| l.starts_with(&format!("{SERVICES_API_PREFIX}.CONSUMER.CREATE.PAYTRACK_")))
                        || import.subject.starts_with("$JS.FC.PAYTRACK_"),
                    "{import:?}"
                ),
            }
        }
        let p = acme.permissions();
        for subject in p.publish.iter().chain(&p.subscribe) {
            assert!(!subject.starts_with(SERVICES_API_PREFIX), "{subject}");
            assert!(!subject.starts_with("_MIRROR"), "{subject}");
            for source in crate::READER_SOURCES {
                assert!(!subject.starts_with(&format!("$JS.FC.{source}.")), "{subject}");
            }
        }
        // Each tenant is its own account; the services' account offers each only its own.
        let conf = render_conf_with(&[acme.clone(), reader("globex")]);
        assert!(conf.contains("  \"reader-acme\": {") && conf.contains("  \"reader-globex\": {"));
        assert!(conf.contains("{ stream: \"paytrack.status.acme.>\", accounts: [\"reader-acme\"] }"));
        assert!(render_conf().starts_with("# NATS accounts") && !render_conf().contains("reader-"));
        // The all-tenant reader is in an account of its own too, not the services'.
        let services = conf.split("\n  \"reader\": {").next().unwrap_or_default();
        assert!(
            !services.contains("user: \"reader\""),
            "the reader is among the services"
        );
        assert!(
            conf.contains("  \"reader\": {\n    jetstream: enabled\n    users: [\n      {\n        user: \"reader\"")
        );
    }
}
