//! Who is calling `/v1/payments…`: an operator JWT or a backend API key. The tenant
//! always comes from the credential, never from the request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use paytrack_shared::TenantId;
use paytrack_shared::auth::{AuthError, bearer};

use crate::app::AppState;
use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The only tenant this caller may read or command.
    pub tenant: TenantId,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = bearer(header).ok_or_else(|| ApiError::Unauthorized(AuthError::Missing.to_string()))?;
        if let Some(tenant) = state.api_keys.tenant_of(token) {
            return Ok(Caller { tenant });
        }
        let claims = state
            .jwt
            .verify(token)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        Ok(Caller { tenant: claims.tenant })
    }
}
