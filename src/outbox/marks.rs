//! Marking delivered rows sent, through a database outage.
//!
//! A row delivered but not marked sent is delivered again once its lease
//! runs out. Each lane holds something for every delivered row until its
//! mark is written (the email lane a send permit, the publication lane a
//! place among the batches in flight), which bounds how many rows a crash
//! can make the next relay deliver twice. If a failed mark gave those back,
//! a lane would go on delivering through a database outage, every row of it
//! unmarked and delivered again afterwards. So a failed mark is tried again,
//! still holding them, until it is written: the lane stops delivering what
//! it could not record, and the bound holds however long the outage lasts.
//! (On the way out, the time the worker gives its relay to finish ends the
//! waiting.)

use sqlx::PgPool;
use std::time::Duration;

use crate::store::outbox::{self, Lane};

/// First wait before a mark is tried again; doubles up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// A mark still failing is logged again every this many tries.
const LOG_EVERY: u32 = 10;

/// Marks `ids` sent, trying again until it is written.
pub(crate) async fn mark_sent(pool: &PgPool, ids: &[i64], lane: Lane) {
    let mut wait = FIRST_WAIT;
    let mut failures = 0u32;
    loop {
        match outbox::mark_sent(pool, ids).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(
                        rows = ids.len(),
                        lane = lane.name(),
                        failures,
                        "marked sent after the database came back"
                    );
                }
                return;
            }
            Err(e) => {
                if failures.is_multiple_of(LOG_EVERY) {
                    tracing::warn!(error = %e, rows = ids.len(), lane = lane.name(), failures = failures + 1, "marking sent failed; the lane waits and tries again");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
}
