//! Checks of the tree itself: the docs name what exists, the Kubernetes manifests,
//! the monitoring rules and the NATS permissions.
//!
//! One test binary, so the whole theme links once.

mod k8s_manifests;
mod monitoring;
mod nats_permissions;
mod tree;
