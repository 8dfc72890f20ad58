//! Abuse of what the worker sends and keeps (issue 25, cases 9–11): SMTP
//! credentials never cross a network in the clear, one address is not
//! mailed without end, and what is no longer needed is pruned while the
//! audit trail stays.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cretpw";

/// Starts `run` with `mail_url` and waits for it to exit (killing it and
/// failing after 30 s); returns whether it succeeded and its stderr.
fn start_up_with_mail_url(mail_url: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-lifecycle"))
        .arg("run")
        // Refused before anything is reached; nothing listens on port 1,
        // so a worker that let MAIL_URL pass stops on these, creating nothing.
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("AMQP_PREFIX", "ult_refused_mail_url")
        .env("MAIL_URL", mail_url)
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env(
            "TEMPLATES_DIR",
            format!("{}/templates", env!("CARGO_MANIFEST_DIR")),
        )
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("worker status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("worker output");
            panic!(
                "MAIL_URL={mail_url:?} did not stop start-up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("worker output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn smtp_credentials_for_a_remote_host_without_required_tls_stop_start_up() {
    for url in [
        format!("smtp://u:{PASSWORD}@mail.example.com:587"),
        format!("smtp://u:{PASSWORD}@mail.example.com:587?tls=opportunistic"),
    ] {
        let probe = url.clone();
        let (ok, stderr) = tokio::task::spawn_blocking(move || start_up_with_mail_url(&probe))
            .await
            .unwrap();
        assert!(!ok, "{url} must stop start-up:\n{stderr}");
        assert!(stderr.contains("MAIL_URL"), "names the setting:\n{stderr}");
        assert!(
            !stderr.contains(PASSWORD),
            "never shows the password:\n{stderr}"
        );
    }
}
