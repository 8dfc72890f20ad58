//! The worker's settings: every variable of the contract, each also a flag.
//!
//! One struct serves as both the clap definition (env-backed flags with the
//! contract's defaults) and the parsed configuration, so a setting cannot be
//! documented in one place and read in another. Values are parsed here, at
//! the edge: a bad duration or URL stops start-up with a message naming it.

#![cfg(feature = "worker")]

use clap::{Args, ValueEnum};
use lettre::message::Mailbox;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How the transport's connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (local relays, test servers).
    None,
    /// `STARTTLS`, required.
    StartTls,
    /// `STARTTLS` when the server offers it.
    Opportunistic,
    /// TLS from the first byte (`smtps://`).
    Wrapper,
}

/// Where emails go: an SMTP server or a directory of `.eml` files.
#[derive(Clone, PartialEq, Eq)]
pub enum MailUrl {
    /// `smtp://[user:pass@]host[:port][?tls=starttls|opportunistic|none]`, `smtps://…`.
    Smtp {
        /// Server host name.
        host: String,
        /// Server port.
        port: u16,
        /// Connection security.
        tls: SmtpTls,
        /// User name and password, if the server wants them.
        credentials: Option<(String, String)>,
    },
    /// `file://DIR`: one `.eml` file per message (development, tests).
    File(PathBuf),
}

impl fmt::Debug for MailUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailUrl::Smtp {
                host,
                port,
                tls,
                credentials,
            } => f
                .debug_struct("Smtp")
                .field("host", host)
                .field("port", port)
                .field("tls", tls)
                .field(
                    "credentials",
                    &credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
                )
                .finish(),
            MailUrl::File(dir) => f.debug_tuple("File").field(dir).finish(),
        }
    }
}

impl MailUrl {
    /// Parses `MAIL_URL`.
    pub fn parse(s: &str) -> Result<MailUrl, String> {
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err("file:// needs a directory, e.g. file://./var/mail".into());
            }
            return Ok(MailUrl::File(PathBuf::from(path)));
        }
        let url = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        let wrapper = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}; use smtp://, smtps:// or file://"
                ));
            }
        };
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        let mut tls = if wrapper {
            SmtpTls::Wrapper
        } else {
            SmtpTls::None
        };
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref(), wrapper) {
                ("tls", "starttls" | "required", false) => tls = SmtpTls::StartTls,
                ("tls", "opportunistic", false) => tls = SmtpTls::Opportunistic,
                ("tls", "none", false) => tls = SmtpTls::None,
                ("tls", other, _) => {
                    return Err(format!(
                        "unsupported tls={other:?}; use starttls, opportunistic or none with smtp://"
                    ));
                }
                (other, _, _) => return Err(format!("unknown parameter {other:?}")),
            }
        }
        let port = url.port().unwrap_or(if wrapper {
            465
        } else if tls == SmtpTls::None {
            25
        } else {
            587
        });
        let credentials = if url.username().is_empty() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s)
                    .ok_or_else(|| "credentials are not valid percent-encoded UTF-8".to_owned())
            };
            Some((
                decode(url.username())?,
                decode(url.password().unwrap_or(""))?,
            ))
        };
        Ok(MailUrl::Smtp {
            host,
            port,
            tls,
            credentials,
        })
    }
}

/// Is `host` this machine (`localhost`, `127.0.0.0/8`, `::1`), so that what
/// is sent to it never crosses a network? A name other than `localhost` is
/// not resolved: it counts as remote.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a `MAIL_URL` that would send SMTP credentials where they can be
/// read on the way: to a host that is not loopback, without TLS
/// (`tls=none`) or with TLS only if the server offers it
/// (`tls=opportunistic`, which anyone in the path can strip). The message
/// names the setting and never holds the password.
pub fn check_mail_credentials(url: &MailUrl) -> Result<(), String> {
    match url {
        MailUrl::Smtp {
            host,
            tls: tls @ (SmtpTls::None | SmtpTls::Opportunistic),
            credentials: Some(_),
            ..
        } if !is_loopback_host(host) => {
            let how = if *tls == SmtpTls::None {
                "without TLS"
            } else {
                "with tls=opportunistic, which sends them in the clear when STARTTLS is not offered or is stripped"
            };
            Err(format!(
                "MAIL_URL: SMTP credentials for {host} would be sent {how}; \
                 use tls=starttls or smtps://"
            ))
        }
        _ => Ok(()),
    }
}

/// The settings that reach a server over the network without TLS, each
/// as a warning naming it (never its value, which may hold a password):
/// `DATABASE_URL` to a host that is not loopback without `sslmode` require
/// or verify-*, `AMQP_URL` to such a host with `amqp://`.
pub fn plaintext_warnings(database_url: &str, amqp_url: &str) -> Vec<String> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    use std::str::FromStr;
    let mut warnings = Vec::new();
    if let Ok(options) = PgConnectOptions::from_str(database_url) {
        let host = options.get_host();
        let remote = !host.starts_with('/') && !is_loopback_host(host);
        let encrypted = matches!(
            options.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        );
        if remote && !encrypted {
            warnings.push(format!(
                "DATABASE_URL: {host} is not loopback and TLS is not required \
                 (sslmode=require or verify-full); data and password may cross the network in the clear"
            ));
        }
    }
    if let Ok(url) = Url::parse(amqp_url) {
        let host = url.host_str().unwrap_or("localhost");
        if url.scheme() == "amqp" && !is_loopback_host(host) {
            warnings.push(format!(
                "AMQP_URL: {host} is not loopback and amqp:// has no TLS (use amqps://); \
                 commands, replies and the password cross the network in the clear"
            ));
        }
    }
    warnings
}

/// Parses `MAIL_URL` for clap without echoing the value in the error, as
/// clap's own message would: it may hold the SMTP password.
#[derive(Debug, Clone, Copy)]
struct MailUrlParser;

impl clap::builder::TypedValueParser for MailUrlParser {
    type Value = MailUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<MailUrl, clap::Error> {
        let refuse = |detail: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid MAIL_URL (--mail-url): {detail}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| refuse("not UTF-8".into()))?;
        MailUrl::parse(text).map_err(refuse)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 7d, 1h, 90s, 500ms)"))
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Ok(s.to_owned())
    } else {
        Err("use 1..=100 characters from [A-Za-z0-9._-]".into())
    }
}

fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    s.parse::<Mailbox>().map_err(|e| {
        format!("not a mailbox ({e}); e.g. \"Customer Portal <no-reply@example.com>\"")
    })
}

fn parse_portal_url(s: &str) -> Result<String, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/user_lifecycle",
        hide_env_values = true
    )]
    pub database_url: String,
}

/// Where the broker is, and the names on it.
#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "AMQP_PREFIX", default_value = "user_lifecycle", value_parser = parse_prefix)]
    pub amqp_prefix: String,
}

/// Settings of `user-lifecycle run` (environment variables or flags).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL (created if missing and migrated at start).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// RabbitMQ.
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// `smtp://host:port`, `smtp://user:pass@host:port?tls=starttls`, `smtps://…` or `file://DIR`.
    #[arg(long, env = "MAIL_URL", default_value = "file://./var/mail", value_parser = MailUrlParser, hide_env_values = true)]
    pub mail_url: MailUrl,
    /// Sender of every email.
    #[arg(long, env = "MAIL_FROM", default_value = "Customer Portal <no-reply@localhost>", value_parser = parse_mailbox)]
    pub mail_from: Mailbox,
    /// Base of the links in emails.
    #[arg(long, env = "PORTAL_URL", default_value = "http://localhost:8080", value_parser = parse_portal_url)]
    pub portal_url: String,
    /// How long an activation link is valid.
    #[arg(long, env = "ACTIVATION_TTL", default_value = "7d", value_parser = parse_duration)]
    pub activation_ttl: Duration,
    /// How long a password reset link is valid.
    #[arg(long, env = "PASSWORD_RESET_TTL", default_value = "1h", value_parser = parse_duration)]
    pub password_reset_ttl: Duration,
    /// A resend (or reset request) sooner than this after the last is refused `too_soon`.
    #[arg(long, env = "RESEND_COOLDOWN", default_value = "60s", value_parser = parse_duration)]
    pub resend_cooldown: Duration,
    /// Most activation and password reset emails (invitation included) to
    /// one user in 24 hours; one more is refused `rate_limited`.
    #[arg(long, env = "MAIL_CAP_PER_DAY", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub mail_cap_per_day: u32,
    /// Cron (with seconds) of the expiry sweep.
    #[arg(long, env = "EXPIRY_SCHEDULE", default_value = "0 */5 * * * *")]
    pub expiry_schedule: String,
    /// Cron (with seconds) of housekeeping; hourly at minute 17 by default
    /// (off the hour, away from other crons).
    #[arg(long, env = "HOUSEKEEPING_SCHEDULE", default_value = "0 17 * * * *")]
    pub housekeeping_schedule: String,
    /// How long a used, revoked or expired token is kept before
    /// housekeeping deletes it (never within 24 h of its issue: the mail
    /// cap counts it).
    #[arg(long, env = "TOKEN_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub token_retention: Duration,
    /// How long an outbox row given up on (an email never delivered) is
    /// kept for diagnosis before housekeeping deletes it.
    #[arg(long, env = "FAILED_OUTBOX_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub failed_outbox_retention: Duration,
    /// Serves `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// A file the worker writes the address it serves `/metrics` on to,
    /// once it listens: with `METRICS_ADDR` port 0, how a supervisor (or a
    /// test) learns the port the kernel picked.
    #[arg(long, env = "METRICS_ADDR_FILE")]
    pub metrics_addr_file: Option<PathBuf>,
    /// Directory of the email templates.
    #[arg(long, env = "TEMPLATES_DIR", default_value = "./templates")]
    pub templates_dir: PathBuf,
    /// `pretty` or `json`; the level comes from `RUST_LOG`.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty", value_enum)]
    pub log_format: LogFormat,
    /// Longest one email send may take (connect and SMTP dialogue).
    #[arg(long, env = "MAIL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub mail_timeout: Duration,
    /// Pooled SMTP connections (and emails sent at once). A send keeps its
    /// slot until its row is marked sent, so a small pool caps the email
    /// rate and lets the emails of a burst fall behind its replies; 32 keeps
    /// up on the benchmark machine (see
    /// docs/decisions/0007-own-smtp-pool-with-pipelining.md).
    #[arg(long, env = "MAIL_POOL_SIZE", default_value_t = 32)]
    pub mail_pool_size: u32,
    /// Attempts before an email is marked failed.
    #[arg(long, env = "MAIL_MAX_ATTEMPTS", default_value_t = 8)]
    pub mail_max_attempts: i32,
    /// First retry delay of an outbox row; doubles per attempt, capped at 1h.
    #[arg(long, env = "OUTBOX_RETRY_BASE", default_value = "2s", value_parser = parse_duration)]
    pub outbox_retry_base: Duration,
    /// How long a relay owns a claimed outbox row before another may take it.
    #[arg(long, env = "OUTBOX_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub outbox_lease: Duration,
    /// Commands in flight at once (the consumer's prefetch); also the most
    /// applied in one transaction.
    #[arg(long, env = "CONSUMER_PREFETCH", default_value_t = 256)]
    pub consumer_prefetch: u16,
    /// Batches of commands applied at once, each in its own transaction.
    /// One by default: the deliveries that arrive while a batch commits
    /// form the next batch, so fewer, bigger transactions carry the same
    /// load; two at once make smaller batches, more commits and a longer
    /// reply tail (see docs/decisions/0002-batch-commands-in-one-transaction.md).
    #[arg(long, env = "CONSUMER_BATCHES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub consumer_batches: u16,
    /// PostgreSQL connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// How long a database session waits for a row lock before the command is retried.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub database_lock_timeout: Duration,
    /// Deliveries of a command that keeps failing for a transient reason
    /// before it is dead-lettered (reason `transient`).
    #[arg(long, env = "COMMAND_MAX_DELIVERIES", default_value_t = 5)]
    pub command_max_deliveries: u32,
    /// Invitations expired per sweep transaction.
    #[arg(long, env = "EXPIRY_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub expiry_batch_size: i64,
    /// After SIGTERM, how long in-flight work may take before the worker exits.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_urls_of_the_contract_parse() {
        assert_eq!(
            MailUrl::parse("smtp://localhost:2525").unwrap(),
            MailUrl::Smtp {
                host: "localhost".into(),
                port: 2525,
                tls: SmtpTls::None,
                credentials: None
            }
        );
        assert_eq!(
            MailUrl::parse("smtp://u%40x:p%3Aw@mail.example.com:587?tls=starttls").unwrap(),
            MailUrl::Smtp {
                host: "mail.example.com".into(),
                port: 587,
                tls: SmtpTls::StartTls,
                credentials: Some(("u@x".into(), "p:w".into())),
            }
        );
        assert!(matches!(
            MailUrl::parse("smtps://mail.example.com").unwrap(),
            MailUrl::Smtp {
                port: 465,
                tls: SmtpTls::Wrapper,
                ..
            }
        ));
        assert_eq!(
            MailUrl::parse("file://./var/mail").unwrap(),
            MailUrl::File("./var/mail".into())
        );
        assert!(MailUrl::parse("http://x").is_err());
        assert!(MailUrl::parse("smtp://x?tls=maybe").is_err());
    }

    #[test]
    fn smtp_credentials_go_to_a_remote_host_only_over_required_tls() {
        let check = |u: &str| check_mail_credentials(&MailUrl::parse(u).unwrap());
        for refused in [
            "smtp://user:s3cretpw@mail.example.com:587",
            "smtp://user:s3cretpw@mail.example.com:587?tls=none",
            "smtp://user:s3cretpw@mail.example.com:587?tls=opportunistic",
            "smtp://user:s3cretpw@10.0.0.5:25",
            "smtp://user:s3cretpw@[2001:db8::1]:25",
        ] {
            let err = check(refused).unwrap_err();
            assert!(err.starts_with("MAIL_URL"), "{refused}: {err}");
            assert!(!err.contains("s3cretpw"), "{refused}: {err}");
        }
        for allowed in [
            "smtp://user:s3cretpw@mail.example.com:587?tls=starttls",
            "smtps://user:s3cretpw@mail.example.com",
            "smtp://user:s3cretpw@localhost:25",
            "smtp://user:s3cretpw@127.0.0.1:2525?tls=opportunistic",
            "smtp://user:s3cretpw@[::1]:25",
            "smtp://mail.example.com:25",
            "smtp://mail.example.com:25?tls=opportunistic",
            "file://./var/mail",
        ] {
            assert_eq!(check(allowed), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn loopback_is_localhost_and_loopback_addresses_only() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "mail.example.com",
            "10.0.0.1",
            "localhost.example.com",
            "[2001:db8::1]",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_remote_database_or_broker_without_tls_is_warned_about_by_name_without_secrets() {
        let local_amqp = "amqp://guest:guest@127.0.0.1:5672/%2f";
        let local_db = "postgres://postgres@127.0.0.1:5432/db";
        assert!(plaintext_warnings(local_db, local_amqp).is_empty());
        assert!(plaintext_warnings("postgres://u@localhost/db", "amqp://localhost").is_empty());

        let db = plaintext_warnings("postgres://u:s3cretpw@db.example.com/db", local_amqp);
        assert_eq!(db.len(), 1, "{db:?}");
        assert!(db[0].starts_with("DATABASE_URL") && !db[0].contains("s3cretpw"));
        for prefer in ["sslmode=prefer", "sslmode=disable", "sslmode=allow"] {
            let url = format!("postgres://u@db.example.com/db?{prefer}");
            assert_eq!(plaintext_warnings(&url, local_amqp).len(), 1, "{prefer}");
        }
        for required in [
            "sslmode=require",
            "sslmode=verify-ca",
            "sslmode=verify-full",
        ] {
            let url = format!("postgres://u:s3cretpw@db.example.com/db?{required}");
            assert!(
                plaintext_warnings(&url, local_amqp).is_empty(),
                "{required}"
            );
        }

        let amqp = plaintext_warnings(local_db, "amqp://u:s3cretpw@mq.example.com:5672/%2f");
        assert_eq!(amqp.len(), 1, "{amqp:?}");
        assert!(amqp[0].starts_with("AMQP_URL") && !amqp[0].contains("s3cretpw"));
        assert!(plaintext_warnings(local_db, "amqps://u:s3cretpw@mq.example.com/%2f").is_empty());
    }

    #[test]
    fn a_mail_url_that_does_not_parse_is_refused_without_echoing_it() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let err = <Cli as clap::Parser>::try_parse_from([
            "ul",
            "--mail-url",
            "smtp://u:s3cretpw@mail.example.com?tls=maybe",
        ])
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("MAIL_URL") && err.contains("maybe"), "{err}");
        assert!(!err.contains("s3cretpw"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_smtp_password() {
        let url = MailUrl::parse("smtp://user:hunter2@mail.example.com").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("7d"));
    }
}
