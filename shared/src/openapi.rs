//! Pieces of the services' OpenAPI documents that are the same everywhere: the
//! `bearer` security scheme every authenticated route names.

use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Adds the `bearer` HTTP security scheme (`Authorization: Bearer …`) to `openapi`,
/// described by `description`, with `bearer_format` (e.g. `JWT`) when the token has
/// one format.
pub fn add_bearer(openapi: &mut OpenApi, description: &str, bearer_format: Option<&str>) {
    let mut scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(description));
    if let Some(format) = bearer_format {
        scheme = scheme.bearer_format(format);
    }
    openapi
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(scheme.build()));
}
