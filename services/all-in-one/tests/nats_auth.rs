//! `paytrack nats-auth` as an operator runs it: the built binary prints the NATS
//! users with a reader per `--tenant-reader`, the same text as the local stack's
//! `nats/auth.conf` for its two tenants, and refuses a tenant that is no subject token.

async fn paytrack(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_paytrack"))
        .args(args)
        .output()
        .await?;
    Ok((
        output.status.success(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

#[tokio::test]
async fn nats_auth_prints_the_users_with_a_reader_per_tenant() -> anyhow::Result<()> {
    let (ok, out, err) = paytrack(&["nats-auth", "--tenant-reader", "dev", "--tenant-reader", "other"]).await?;
    assert!(ok, "{err}");
    let local = std::fs::read_to_string(paytrack_tests::workspace_root().join("nats/auth.conf"))?;
    assert_eq!(out, local, "the local stack's configuration is this command's output");
    assert!(err.contains("PAYTRACK_NATS_READER_PASSWORD_dev"), "{err}");

    let (ok, out, err) = paytrack(&["nats-auth", "--tenant-reader", "my-co"]).await?;
    assert!(ok, "{err}");
    assert!(out.contains("user: \"reader-my-co\""), "{out}");
    assert!(
        out.contains("password: $PAYTRACK_NATS_READER_PASSWORD_my_2Dco"),
        "{out}"
    );

    for bad in ["a.b", "_"] {
        let (ok, out, err) = paytrack(&["nats-auth", "--tenant-reader", bad]).await?;
        assert!(!ok, "tenant {bad} was accepted: {out}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(&format!("--tenant-reader {bad}")), "{err}");
    }
    Ok(())
}
