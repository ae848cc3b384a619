//! The operator CLI as an operator runs it: the built `paytrack` binary, configured
//! by environment, against a real ingest and NATS.

use std::time::Duration;

use paytrack_shared::TenantId;
use paytrack_shared::auth::JwtKeys;
use paytrack_tests::NatsServer;
use paytrack_tests::standalone::StandaloneIngest;
use secrecy::SecretString;

const SECRETS: &str = "acme/stdwebhooks=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,\
                       acme/razorpay=rzp_cli_secret_1,acme/stripe=whsec_cli_stripe";

async fn paytrack(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(bool, String)> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_paytrack"))
        .args(args)
        .envs(env.iter().copied())
        .env("PAYTRACK_JWT_SECRET", "cli-test-secret")
        .env("PAYTRACK_LOG_FORMAT", "pretty")
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

/// `paytrack mint-token` prints a token the configured keys verify, with the
/// tenant, subject and channels asked for.
#[tokio::test]
async fn mint_token_prints_a_verifiable_token() -> anyhow::Result<()> {
    let (ok, out) = paytrack(
        &[
            "mint-token",
            "--tenant",
            "acme",
            "--sub",
            "ops-1",
            "--channel",
            "payment:p1",
        ],
        &[],
    )
    .await?;
    assert!(ok, "{out}");
    let keys = JwtKeys::new(&SecretString::from("cli-test-secret"), "paytrack", "paytrack");
    let claims = keys.verify(out.trim())?;
    assert_eq!(claims.tenant, TenantId::new("acme")?);
    assert_eq!(claims.sub, "ops-1");
    assert_eq!(claims.channels, Some(vec!["payment:p1".to_owned()]));
    let other = JwtKeys::new(&SecretString::from("another-secret"), "paytrack", "paytrack");
    assert!(other.verify(out.trim()).is_err());
    Ok(())
}

/// `paytrack webhook` sends each scheme's event, signed with the configured secret:
/// ingest stores it as a fact of the payment. Signed with a secret ingest does not
/// hold, it is refused (401) and the command fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sends_a_signed_event_of_each_scheme() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let ingest = StandaloneIngest::start(&nats, SECRETS, &[("jwt_secret", "cli-test-secret")]).await?;
    let url = ingest.url.clone();
    let js = async_nats::jetstream::new(nats.admin_client().await?);

    for provider in ["stdwebhooks", "razorpay", "stripe"] {
        let payment = format!("pay_cli_{provider}");
        let args = [
            "webhook",
            "--provider",
            provider,
            "--tenant",
            "acme",
            "--payment-id",
            &payment,
            "--status",
            "failed",
            "--currency",
            "INR",
            "--ingest-url",
            &url,
        ];
        let (ok, out) = paytrack(&args, &[("PAYTRACK_WEBHOOK_SECRETS", SECRETS)]).await?;
        assert!(ok, "{provider}: {out}");
        assert!(out.contains("HTTP 200"), "{out}");
        let stored = js
            .get_stream(paytrack_shared::subjects::STREAM_IN)
            .await?
            .get_last_raw_message_by_subject(&format!("paytrack.in.acme.{payment}"))
            .await?;
        let fact: serde_json::Value = serde_json::from_slice(&stored.payload)?;
        assert_eq!(fact["source"]["provider"], provider);
        assert_eq!(fact["source"]["status"], "failed", "{fact}");

        let forged = SECRETS
            .replace(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsec_QWxsIHlvdXIgYmFzZSBhcmUgYmVsb25nIHRvIHVz",
            )
            .replace("rzp_cli_secret_1", "rzp_cli_secret_2")
            .replace("whsec_cli_stripe", "whsec_cli_other");
        let (ok, out) = paytrack(&args, &[("PAYTRACK_WEBHOOK_SECRETS", &forged)]).await?;
        assert!(!ok, "{provider}: a forged webhook was accepted: {out}");
        assert!(out.contains("HTTP 401"), "{out}");
    }
    ingest.stop().await?;
    Ok(())
}

/// `paytrack tail` prints a channel's events with their positions, and `paytrack
/// payments evidence` the payment's evidence pack, against a whole mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_positions_and_evidence_prints_the_pack() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mesh = paytrack_tests::Mesh::start().await?;
    let token = mesh.operator_token();
    let edge_url = format!("http://{}", mesh.edge_addr);
    let payment = "pay_cli_tail";
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_paytrack"))
        .args(["tail", &format!("payment:{payment}"), "--count", "1"])
        .args(["--token", &token, "--edge-url", &edge_url])
        .env("PAYTRACK_JWT_SECRET", &mesh.jwt_secret)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(tail.stdout.take().expect("piped")).lines();
    // The first line naming `what` (welcome and heartbeats come and go).
    let mut line_with = async |what: &str| -> anyhow::Result<String> {
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains(what) {
                    return Ok(line);
                }
            }
            anyhow::bail!("tail ended before printing {what:?}")
        };
        tokio::time::timeout(Duration::from_secs(60), read).await?
    };
    line_with(" subscribed ").await?;

    let secrets = format!("{}/razorpay={}", mesh.tenant, paytrack_tests::mesh::RAZORPAY_SECRET);
    let args = [
        "webhook",
        "--provider",
        "razorpay",
        "--tenant",
        mesh.tenant.as_str(),
        "--payment-id",
        payment,
        "--ingest-url",
        &mesh.ingest_url,
    ];
    let (ok, out) = paytrack(&args, &[("PAYTRACK_WEBHOOK_SECRETS", &secrets)]).await?;
    assert!(ok, "{out}");

    let event = line_with("prev_seq=").await?;
    assert!(event.contains(" transition "), "{event}");
    assert!(event.contains("-> succeeded"), "{event}");
    assert!(
        tokio::time::timeout(Duration::from_secs(60), tail.wait())
            .await??
            .success()
    );

    let (ok, out) = paytrack(
        &[
            "payments",
            "evidence",
            payment,
            "--token",
            &token,
            "--ingest-url",
            &mesh.ingest_url,
        ],
        &[("PAYTRACK_JWT_SECRET", &mesh.jwt_secret)],
    )
    .await?;
    assert!(ok, "{out}");
    assert!(out.contains("razorpay:payment.captured -> applied"), "{out}");
    Ok(())
}

/// `paytrack layout` is the layout step: as the NATS admin it creates every stream
/// and bucket, which the services then find as they verify it, and the mirrors in
/// the readers' accounts (each `--tenant-reader`'s too); without the admin's password
/// it refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_applies_the_streams_and_buckets_as_the_admin() -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let nats = NatsServer::start_with_tenant_readers(&["acme"]).await?;
    let url = nats.url();
    let admin = nats.password(paytrack_nats::Role::Admin);

    let (ok, out) = paytrack(&["layout"], &[("PAYTRACK_NATS_URL", &url)]).await?;
    assert!(!ok && out.contains("PAYTRACK_NATS_ADMIN_PASSWORD"), "{out}");

    let with_admin = [
        ("PAYTRACK_NATS_URL", url.as_str()),
        ("PAYTRACK_NATS_ADMIN_PASSWORD", admin.expose_secret()),
    ];
    let (ok, out) = paytrack(&["layout", "--tenant-reader", "a.b"], &with_admin).await?;
    assert!(!ok && out.contains("--tenant-reader a.b"), "{out}");

    let (ok, out) = paytrack(&["layout", "--tenant-reader", "acme"], &with_admin).await?;
    assert!(ok, "{out}");
    let settings = paytrack_shared::config::Settings::from_pairs([("nats_url", url.clone())])?;
    let layout = paytrack_nats::Layout::from_settings(&settings);
    let js = async_nats::jetstream::new(nats.connect_as(paytrack_nats::Role::Ingest).await?);
    paytrack_nats::verify_layout(&js, &layout).await?;
    // The readers' mirrors, each in its reader's account.
    let admin_client = nats.admin_client().await?;
    let acme = paytrack_nats::auth::TenantReader::new(paytrack_shared::TenantId::new("acme")?)?;
    for account in [
        paytrack_nats::ReaderAccount::AllTenants,
        paytrack_nats::ReaderAccount::Tenant(acme),
    ] {
        let in_account = async_nats::jetstream::with_prefix(admin_client.clone(), &account.api_prefix());
        for mirror in account.mirrors() {
            in_account
                .get_stream(&mirror.name)
                .await
                .map_err(|e| anyhow::anyhow!("{} of {}: {e}", mirror.name, account.name()))?;
        }
    }

    Ok(())
}
