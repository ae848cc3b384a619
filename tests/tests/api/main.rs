//! The HTTP API and the webhooks: tokens and scopes, lists, problems and the OpenAPI
//! schema, commands, evidence, hostile input, sessions, tenancy, every provider's
//! webhook scheme and the console.
//!
//! One test binary, so the whole theme links once and shares one PostgreSQL cluster
//! (a fresh database per test, `paytrack_tests::pg`).

mod access;
mod api_list;
mod api_problems;
mod api_schema;
mod claims;
mod commands;
mod console;
mod evidence;
mod hostile;
mod session;
mod tenancy;
mod webhook_schemes;
