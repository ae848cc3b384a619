//! The CLI never prints a secret: not in `--help` (clap shows environment values
//! unless told not to), not in the errors of commands that fail, with every variable
//! of a `make up` stack.env in the environment.

mod stack_env;

use stack_env::{SECRETS, Stack};

/// `--help` of every command, and commands failing in several ways (nothing
/// listening, a URL holding a password, a database with a password that cannot be
/// reached, a refused argument), print none of the stack's secrets.
#[tokio::test]
async fn help_and_errors_never_print_a_secret() -> anyhow::Result<()> {
    let stack = Stack {
        nats: "nats://127.0.0.1:1",
        database: "postgres://paytrack:dbsekrit0123456789@127.0.0.1:1/paytrack",
        ingest: "http://ops:dbsekrit0123456789@127.0.0.1:1",
        edge: "http://127.0.0.1:1",
        simulator: "http://127.0.0.1:1",
        tenant: "dev",
        jwt_secret: SECRETS[0],
        token: SECRETS[1],
        simulator_token: SECRETS[6],
        webhook_secrets: [SECRETS[2], SECRETS[3], SECRETS[4]],
        nats_passwords: [SECRETS[7], SECRETS[7]],
    };
    let inputs = stack_env::inputs(&stack);
    let file = stack_env::render(&inputs)?;
    let helps: [&[&str]; 12] = [
        &["--help"],
        &["payments", "--help"],
        &["payments", "list", "--help"],
        &["payments", "get", "--help"],
        &["tail", "--help"],
        &["trigger", "--help"],
        &["webhook", "--help"],
        &["alerts", "ack", "--help"],
        &["resolve", "--help"],
        &["mint-token", "--help"],
        &["rebuild", "--help"],
        &["run", "--help"],
    ];
    let failing: [&[&str]; 11] = [
        &["payments", "get", "pay_1"],
        &["payments", "list", "--status", "succeeded"],
        &["payments", "evidence", "pay_1"],
        &["cancel", "pay_1"],
        &["alerts", "list"],
        &["tail", "payments"],
        &["trigger", "stuck_pending"],
        &["webhook", "--provider", "stripe", "--payment-id", "pay_1"],
        &["rebuild"],
        &["resolve", "pay_1"],
        &["mint-token", "--tenant", "not a tenant!", "--sub", "x"],
    ];
    for export_all in [false, true] {
        for args in helps {
            let output = stack_env::paytrack(file.path(), export_all, args).await?;
            let text = stack_env::text(&output);
            assert!(output.status.success(), "{args:?}: {text}");
            for secret in SECRETS {
                assert!(!text.contains(secret), "{args:?} printed {secret}: {text}");
            }
        }
        for args in failing {
            let output = stack_env::paytrack(file.path(), export_all, args).await?;
            let text = stack_env::text(&output);
            assert!(!output.status.success(), "{args:?} succeeded: {text}");
            for secret in SECRETS {
                assert!(!text.contains(secret), "{args:?} printed {secret}: {text}");
            }
        }
    }
    Ok(())
}
