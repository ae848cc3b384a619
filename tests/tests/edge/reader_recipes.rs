//! The Python recipe of docs/readers.md (clients/python/read_tenant.py, nats-py
//! pinned in clients/python/requirements.txt and installed into .dev/venv-readers by
//! scripts/install-python-readers.sh, which `make test` runs) reads a tenant's history
//! as that tenant's reader against a real nats-server: only its tenant, in order, and
//! from a position.

use std::time::Duration;

use anyhow::Context;
use paytrack_nats::Role;
use paytrack_shared::envelope::{self, Transition};
use paytrack_shared::{TenantId, subjects};
use paytrack_tests::NatsServer;
use paytrack_tests::workload;
use secrecy::ExposeSecret;

/// How long the script may take on a loaded machine (Python start-up included).
const SCRIPT: Duration = Duration::from_secs(120);

const ACME: &str = "acme";

/// Publishes versions 1 to 3 of two payments of `tenant`, version by version, and
/// returns (position, payment, version) of each.
async fn publish(nats: &NatsServer, tenant: &str) -> anyhow::Result<Vec<(u64, String, u64)>> {
    let js = async_nats::jetstream::new(nats.connect_as(Role::Reconciler).await?);
    let tenant = TenantId::new(tenant)?;
    let plans = workload::plans("pay_", 2);
    let mut published = Vec::new();
    for version in 1..=3 {
        for plan in &plans {
            let t: Transition = workload::transition(&tenant, plan, version)?;
            let subject = subjects::status(&t.tenant, &t.merchant_id, &t.payment_id);
            let ack = js.publish(subject, envelope::encode(&t)).await?.await?;
            published.push((ack.sequence, plan.payment.clone(), version as u64));
        }
    }
    Ok(published)
}

/// Runs the recipe as acme's reader; returns its lines as (position, payment, version).
async fn run_recipe(nats: &NatsServer, args: &[String]) -> anyhow::Result<Vec<(u64, String, u64)>> {
    let root = paytrack_tests::workspace_root();
    let python = root.join(".dev/venv-readers/bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} is missing: run scripts/install-python-readers.sh (make test does)",
        python.display()
    );
    let run = tokio::process::Command::new(python)
        .arg(root.join("clients/python/read_tenant.py"))
        .args(args)
        .env("NATS_URL", nats.url())
        .env("READER_TENANT", ACME)
        .env("READER_PASSWORD", nats.tenant_reader_password(ACME).expose_secret())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT, run)
        .await
        .context("the Python recipe did not finish")??;
    anyhow::ensure!(
        output.status.success(),
        "the Python recipe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            anyhow::ensure!(fields.len() == 4, "unexpected line {line:?}");
            Ok((fields[0].parse()?, fields[1].to_owned(), fields[2].parse()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_recipe_reads_its_tenants_history_from_a_position() -> anyhow::Result<()> {
    let nats = NatsServer::start_with_tenant_readers(&[ACME]).await?;
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", nats.url())])?;
    nats.lay_out_for(&settings).await?;
    publish(&nats, "globex").await?;
    let acme = publish(&nats, ACME).await?;

    assert_eq!(run_recipe(&nats, &[acme.len().to_string()]).await?, acme);
    // Resumed after the third transition's position: the rest, nothing before.
    let after = acme[2].0;
    assert_eq!(
        run_recipe(&nats, &[(acme.len() - 3).to_string(), after.to_string()]).await?,
        acme[3..]
    );
    Ok(())
}
