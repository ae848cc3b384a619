//! `paytrack run` refuses bad settings before it starts anything, naming the key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A malformed `whsec_` secret was found per request as a 500; now the binary exits
/// at start with an error naming PAYTRACK_WEBHOOK_SECRETS (and never echoes the
/// secret). Nothing is reachable on the configured addresses, so a binary that got
/// past validation would fail differently (or hang retrying).
#[test]
fn paytrack_run_with_a_malformed_webhook_secret_fails_at_start_naming_the_key() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paytrack"))
        .arg("run")
        .env_clear()
        .env("PAYTRACK_JWT_SECRET", "s3cret-s3cret-s3cret")
        .env("PAYTRACK_WEBHOOK_SECRETS", "acme/stdwebhooks=whsec_%%not-base64%%")
        .env("PAYTRACK_NATS_URL", "nats://127.0.0.1:1")
        .env("PAYTRACK_DATABASE_URL", "postgres://paytrack@127.0.0.1:1/paytrack")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn paytrack");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("paytrack run did not exit on a malformed secret");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(!status.success());
    assert!(stderr.contains("PAYTRACK_WEBHOOK_SECRETS"), "{stderr}");
    assert!(stderr.contains("webhook_secrets"), "{stderr}");
    assert!(!stderr.contains("not-base64"), "the secret was echoed: {stderr}");
}
