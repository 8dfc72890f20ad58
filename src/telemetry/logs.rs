//! Log output: pretty for a terminal or JSON lines, level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, at start-up.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,sqlx=warn,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // A line's spans are its command's span alone (the only span
            // there is), already in `span`: listing it again under
            // `spans` would serialize it twice on every line.
            .with_span_list(false)
            .try_init(),
    };
    // A subscriber already installed (tests) is fine.
    let _ = result;
}
