//! The worker under benchmark: a child process, and what /proc says about it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::BenchError;

/// A worker process started for the benchmark.
pub struct WorkerProcess {
    child: Child,
    /// Where its stderr goes.
    log: PathBuf,
    /// Its metrics address.
    pub metrics: std::net::SocketAddr,
}

/// Ticks per second of /proc CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

impl WorkerProcess {
    /// Starts `<worker> run` with `env` on top of the current environment.
    pub fn spawn(
        worker: &Path,
        env: &[(String, String)],
        log: &PathBuf,
    ) -> Result<WorkerProcess, BenchError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let metrics: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let stderr = std::fs::File::create(log)?;
        let child = Command::new(worker)
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("METRICS_ADDR", metrics.to_string())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        Ok(WorkerProcess {
            child,
            log: log.clone(),
            metrics,
        })
    }

    /// Waits until `/readyz` answers 200; returns how long it took.
    pub async fn wait_ready(&mut self, started: Instant) -> Result<Duration, BenchError> {
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its last error line says why (or else its last line).
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let why = log
                    .lines()
                    .rfind(|l| l.starts_with("error:"))
                    .or_else(|| log.lines().rfind(|l| !l.trim().is_empty()))
                    .unwrap_or("");
                return Err(BenchError::new(format!(
                    "the worker exited with {status}: {why} (its log: {})",
                    self.log.display()
                )));
            }
            if readyz(self.metrics).await {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(BenchError::new("the worker was not ready within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// Peak resident memory since start, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    /// Clears the peak so the next reading covers only what follows.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// CPU seconds (user + system) used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return 0.0;
        };
        // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
        let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / TICKS_PER_SECOND
    }

    /// How many batches of commands the worker has written so far as one
    /// statement and in a transaction (`user_lifecycle_command_batches_total`);
    /// zeros when its metrics do not answer.
    pub async fn batches_written(&self) -> (f64, f64) {
        let text = http_get(self.metrics, "/metrics").await.unwrap_or_default();
        let series = |written: &str| {
            let name = format!("user_lifecycle_command_batches_total{{written=\"{written}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        (series("one_statement"), series("transaction"))
    }

    /// Stops the worker (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run that ends early (an error, a stall) must not leave its worker
/// running: it would hold the benchmark's database and consume its queue.
impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn readyz(addr: std::net::SocketAddr) -> bool {
    http_get(addr, "/readyz").await.is_some()
}

/// The body of `GET path` on `addr` if it answered 200.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
