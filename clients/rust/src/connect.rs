//! Who the client reads as, and the connection that goes with it: a tenant reader
//! must use its own inbox prefix (the server lets it subscribe to no other), the
//! all-tenant reader a standard client's default.

use paytrack_contract::TenantId;
use paytrack_contract::readers;

use crate::histories::ReadError;

/// Whose histories a reader may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's (a tenant reader's whole permission).
    Tenant(TenantId),
    /// Every tenant's (the all-tenant `reader`).
    AllTenants,
}

impl Scope {
    /// The filter of the transitions in scope on the status mirror.
    pub fn transitions_filter(&self) -> String {
        match self {
            Scope::Tenant(tenant) => readers::tenant_status(tenant),
            Scope::AllTenants => paytrack_contract::subjects::STATUS_ALL.to_owned(),
        }
    }
}

/// A reader's NATS user and password.
#[derive(Clone)]
pub struct Login {
    scope: Scope,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Login").field("user", &self.user()).finish()
    }
}

impl Login {
    /// `tenant`'s reader, `reader-<tenant>`.
    pub fn tenant(tenant: TenantId, password: String) -> Login {
        Login {
            scope: Scope::Tenant(tenant),
            password,
        }
    }

    /// The all-tenant `reader`.
    pub fn all_tenants(password: String) -> Login {
        Login {
            scope: Scope::AllTenants,
            password,
        }
    }

    /// What the login may read.
    pub fn scope(&self) -> Scope {
        self.scope.clone()
    }

    /// The NATS user name.
    pub fn user(&self) -> String {
        match &self.scope {
            Scope::Tenant(tenant) => readers::tenant_reader_user(tenant),
            Scope::AllTenants => readers::ALL_TENANTS_READER_USER.to_owned(),
        }
    }

    /// The inbox prefix the server lets this user receive replies on.
    pub fn inbox_prefix(&self) -> String {
        match &self.scope {
            Scope::Tenant(tenant) => readers::tenant_reader_inbox(tenant),
            Scope::AllTenants => "_INBOX".to_owned(),
        }
    }
}

/// Connects to `url` as `login`, with its inbox prefix; the client reconnects by
/// itself after a drop (reading resumes then, see [`crate::PaymentHistories`]).
pub async fn connect(url: &str, login: &Login) -> Result<async_nats::Client, ReadError> {
    async_nats::ConnectOptions::with_user_and_password(login.user(), login.password.clone())
        .custom_inbox_prefix(login.inbox_prefix())
        .connect(url)
        .await
        .map_err(|error| ReadError::Connect(error.to_string()))
}
