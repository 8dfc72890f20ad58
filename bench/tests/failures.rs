//! The benchmark binary, run as a user would: it says why when its worker
//! cannot start, and leaves nothing behind.
//!
//! The worker it runs is `user-lifecycle` next to `bench` in the target
//! directory: `cargo test` at the workspace root builds both.

use sqlx::Connection as _;
use std::path::PathBuf;
use std::process::{Command, Output};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";

fn templates_dir() -> String {
    format!("{}/../templates", env!("CARGO_MANIFEST_DIR"))
}

/// The worker binary the benchmark runs by default, which must be there.
fn worker_bin() -> PathBuf {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_bench"))
        .with_file_name(format!("user-lifecycle{}", std::env::consts::EXE_SUFFIX));
    assert!(
        worker.is_file(),
        "no worker binary at {}: run `cargo test` at the workspace root, which builds it, \
         or `cargo build -p user-lifecycle` first",
        worker.display()
    );
    worker
}

/// Runs `bench ARGS` with `env` (off the test's runtime).
async fn run(args: &[&str], env: Vec<(String, String)>) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(&args)
            .env_remove("RUST_LOG")
            .env("TEMPLATES_DIR", templates_dir())
            .envs(env)
            .output()
            .expect("run bench")
    })
    .await
    .expect("the benchmark ran")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_benchmark_whose_worker_cannot_start_says_why_and_leaves_nothing_behind() {
    let name = format!("ul_benchfail_{}", uuid::Uuid::new_v4().simple());
    async fn bench(name: &str, extra: &[&str], templates: &str) -> Output {
        let mut args = vec![
            "--commands",
            "50",
            "--expire",
            "0",
            "--latency-commands",
            "0",
        ];
        args.extend_from_slice(extra);
        let env = vec![
            ("AMQP_URL".to_owned(), AMQP_URL.to_owned()),
            ("DATABASE_URL".to_owned(), format!("{PG_BASE}/{name}")),
            ("TEMPLATES_DIR".to_owned(), templates.to_owned()),
        ];
        run(&args, env).await
    }

    // The worker that refuses the setting further down is there to run.
    worker_bin();

    // Templates missing: refused before any measuring.
    let out = bench(&name, &[], "/nonexistent/templates").await;
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read templates directory /nonexistent/templates")
            && !err.contains("raw limits"),
        "names the templates before measuring anything: {err}"
    );

    // A setting the worker refuses: the benchmark says what the worker said.
    let out = bench(
        &name,
        &["--worker-env", "MAIL_POOL_SIZE=zero"],
        &templates_dir(),
    )
    .await;
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the worker exited with")
            && err.contains("'zero'")
            && err.contains("MAIL_POOL_SIZE")
            && err.contains("its log: "),
        "names the worker's own error and where its log is: {err}"
    );
    let mut admin = sqlx::PgConnection::connect(&format!("{PG_BASE}/postgres"))
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(format!("{name}_bench"))
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "the benchmark's database is dropped");
}
