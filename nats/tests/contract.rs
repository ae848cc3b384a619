//! The contract (`docs/contract.md`) and the layout in code name the same streams,
//! subjects and KV buckets: a stream or bucket added to the code but not to the
//! contract, or listed in the contract but gone from the code, fails here.

use std::collections::BTreeSet;
use std::time::Duration;

use paytrack_nats::{DuplicateWindows, Layout, bucket_configs, stream_configs};

fn contract() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/contract.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn layout() -> Layout {
    Layout {
        replicas: 1,
        windows: DuplicateWindows {
            inbound: Duration::from_secs(1),
            push: Duration::from_secs(1),
            internal: Duration::from_secs(1),
        },
        idempotency_ttl: Duration::from_secs(1),
        claims_max_age: Duration::from_secs(1),
    }
}

/// The streams of the layout in code, the readers' mirrors (in the all-tenant
/// reader's account) included.
fn streams_in_code() -> Vec<async_nats::jetstream::stream::Config> {
    let mut streams = stream_configs(&layout());
    streams.extend(paytrack_nats::ReaderAccount::AllTenants.mirror_configs(&layout()));
    streams
}

/// The KV buckets of the layout in code.
fn buckets_in_code() -> Vec<String> {
    bucket_configs(&layout()).into_iter().map(|c| c.bucket).collect()
}

/// Every `PAYTRACK_…` name the contract's tables list (first cell of a table row).
fn names_in_contract_tables(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split(" |").next())
        .map(str::trim)
        .filter(|cell| cell.starts_with("PAYTRACK_") && cell.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_stream_and_its_subjects_are_in_the_contract() {
    let text = contract();
    for config in streams_in_code() {
        let row = text
            .lines()
            .find(|line| line.starts_with(&format!("| {} |", config.name)))
            .unwrap_or_else(|| panic!("docs/contract.md has no row for stream {}", config.name));
        for subject in &config.subjects {
            // The contract spells `paytrack.status.>` as `paytrack.status.<tenant>…`.
            let prefix = subject.trim_end_matches('>');
            assert!(
                row.contains(&format!("`{prefix}<")),
                "the row of {} does not list its subjects {subject}",
                config.name
            );
        }
    }
}

#[test]
fn every_bucket_is_in_the_contract() {
    let text = contract();
    for bucket in buckets_in_code() {
        assert!(
            text.lines().any(|line| line.starts_with(&format!("| {bucket} |"))),
            "docs/contract.md has no row for KV bucket {bucket}"
        );
    }
}

#[test]
fn the_contract_lists_nothing_the_code_lacks() {
    let mut known: BTreeSet<String> = streams_in_code().into_iter().map(|c| c.name).collect();
    known.extend(buckets_in_code());
    for name in names_in_contract_tables(&contract()) {
        assert!(
            known.contains(&name),
            "docs/contract.md lists {name}, which the code does not define"
        );
    }
}
