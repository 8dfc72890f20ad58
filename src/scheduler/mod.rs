//! Scheduled jobs (tokio-cron-scheduler): the expiry sweep and housekeeping.
//!
//! Each job takes a PostgreSQL advisory lock first, so with several
//! replicas only one runs it at a time; the others record `skipped`.

#![cfg(feature = "worker")]

pub mod expiry;
pub mod housekeeping;
pub mod lock;

use sqlx::PgPool;
use std::sync::Arc;
use thiserror::Error;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

/// The scheduler could not start.
#[derive(Debug, Error)]
pub enum SchedulerError {
    /// A schedule does not parse.
    #[error(
        "{setting} {schedule:?} is not a valid cron expression with seconds (e.g. \"0 */5 * * * *\"): {detail}"
    )]
    BadSchedule {
        /// Which setting.
        setting: &'static str,
        /// Its value.
        schedule: String,
        /// The parser's message.
        detail: String,
    },
    /// The scheduler itself failed.
    #[error(transparent)]
    Scheduler(#[from] JobSchedulerError),
}

/// Checks that `schedule` parses, without starting anything.
pub fn validate(setting: &'static str, schedule: &str) -> Result<(), SchedulerError> {
    Job::new_async(schedule, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| SchedulerError::BadSchedule {
            setting,
            schedule: schedule.to_owned(),
            detail: format!("{e:?}"),
        })
}

/// Starts the jobs; the returned scheduler runs until shut down.
pub async fn start(
    pool: PgPool,
    expiry_schedule: &str,
    batch: i64,
    relay: Arc<crate::outbox::Wakeup>,
    housekeeping_schedule: &str,
    retention: housekeeping::Retention,
) -> Result<JobScheduler, SchedulerError> {
    validate("EXPIRY_SCHEDULE", expiry_schedule)?;
    validate("HOUSEKEEPING_SCHEDULE", housekeeping_schedule)?;
    let scheduler = JobScheduler::new().await?;
    let expiry_pool = pool.clone();
    scheduler
        .add(Job::new_async(expiry_schedule, move |_, _| {
            let pool = expiry_pool.clone();
            let relay = relay.clone();
            Box::pin(async move {
                expiry::run(&pool, batch, &relay).await;
            })
        })?)
        .await?;
    scheduler
        .add(Job::new_async(housekeeping_schedule, move |_, _| {
            let pool = pool.clone();
            Box::pin(async move {
                housekeeping::run(&pool, retention).await;
            })
        })?)
        .await?;
    scheduler.start().await?;
    Ok(scheduler)
}
