//! `dead-letters replay`: moves dead letters back to `P.commands`, for the
//! worker to apply once what made them fail is fixed.
//!
//! Each selected message is published to the `P.commands` exchange
//! (mandatory, with publisher confirms) with its original body and
//! properties (content type, `reply_to`, `correlation_id`, …), minus the
//! dead-letter headers (`x-error`, `x-error-reason`, and the broker's
//! `x-delivery-count`/`x-death` bookkeeping, so the replay starts with a
//! clean delivery count) and plus `x-replayed-from-dead-letter: true`.
//! The dead letter is acked only after the broker confirmed the copy;
//! everything not replayed goes back to the queue in its order. Replaying
//! twice is harmless: commands are idempotent by `id`, and a command that
//! was already applied is answered with its stored reply.

use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::{Channel, Confirmation};
use std::collections::BTreeSet;
use std::time::Duration;

use super::OpsError;
use super::dead_letters::{DeadLetter, DeadLetterQueue, Held, ready_messages, replay_headers};

/// The header that marks a replayed command.
pub const REPLAYED_HEADER: &str = "x-replayed-from-dead-letter";

/// How long to wait for the broker to confirm one replayed message.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every message waiting when the replay starts.
    All,
    /// The messages whose envelope has one of these command ids.
    Ids(BTreeSet<String>),
}

impl Selection {
    fn takes(&self, letter: &DeadLetter) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => letter.id.as_ref().is_some_and(|id| ids.contains(id)),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Where the messages went (`P.commands`).
    pub commands: String,
    /// The dead-letter queue (`P.commands.dead`).
    pub queue: String,
    /// Messages replayed (or, in a dry run, that would be).
    pub replayed: usize,
    /// Messages left in the dead-letter queue.
    pub left: usize,
    /// Requested ids that no dead letter has.
    pub missing: Vec<String>,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Replays the `selection` of the dead letters waiting now; `on_replayed`
/// is called for each one once it is safely in `P.commands` (in a dry
/// run: for each one that would be replayed).
pub async fn replay(
    url: &str,
    prefix: &str,
    selection: &Selection,
    dry_run: bool,
    mut on_replayed: impl FnMut(&DeadLetter),
) -> Result<ReplayReport, OpsError> {
    let queue = DeadLetterQueue::open(url, prefix).await?;
    let topology = queue.topology().clone();
    let publisher = queue
        .connection()
        .create_channel()
        .await
        .map_err(OpsError::broker("opening a channel"))?;
    ready_messages(&publisher, &topology.commands).await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(OpsError::broker("enabling publisher confirms"))?;

    let held = queue.take_all().await?;
    let missing = match selection {
        Selection::All => Vec::new(),
        Selection::Ids(ids) => ids
            .iter()
            .filter(|id| !held.iter().any(|h| h.letter.id.as_ref() == Some(*id)))
            .cloned()
            .collect(),
    };

    let mut replayed = 0;
    let mut back: Vec<&Held> = Vec::new();
    let mut failure = None;
    for h in &held {
        if !selection.takes(&h.letter) || failure.is_some() {
            back.push(h);
            continue;
        }
        if dry_run {
            on_replayed(&h.letter);
            replayed += 1;
            back.push(h);
            continue;
        }
        if let Err(detail) = publish(&publisher, &topology.commands, h).await {
            failure = Some(OpsError::Replay {
                position: h.letter.position,
                exchange: topology.commands.clone(),
                detail,
            });
            back.push(h);
            continue;
        }
        h.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(OpsError::broker(
                "acking a replayed dead letter (it may be replayed again later, which is harmless)",
            ))?;
        on_replayed(&h.letter);
        replayed += 1;
    }
    queue.put_back(back.iter().copied()).await?;
    let left = back.len();
    queue.close().await?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(ReplayReport {
        commands: topology.commands,
        queue: topology.dead_queue,
        replayed,
        left,
        missing,
        dry_run,
    })
}

/// Publishes a copy of `h` to `exchange` and waits for the broker's confirm.
async fn publish(channel: &Channel, exchange: &str, h: &Held) -> Result<(), String> {
    let original = &h.delivery.properties;
    let headers = replay_headers(
        original.headers().as_ref(),
        (REPLAYED_HEADER, AMQPValue::Boolean(true)),
    );
    let properties = original.clone().with_headers(headers).with_delivery_mode(2);
    // The original routing key is not kept by dead-lettering; the worker's
    // queue takes any, and the type is what `send` and upstreams use.
    let routing_key = h
        .letter
        .kind
        .as_deref()
        .filter(|k| k.len() <= 255)
        .unwrap_or("replay");
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &h.delivery.data,
            properties,
        )
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Err(_) => Err(format!("no publisher confirm within {CONFIRM_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(format!(
            "unroutable: {} {}",
            returned.reply_code, returned.reply_text
        )),
        Ok(Ok(Confirmation::Nack(_))) => Err("the broker nacked it".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: Option<&str>) -> DeadLetter {
        DeadLetter {
            position: 1,
            reason: None,
            error: None,
            id: id.map(str::to_owned),
            kind: None,
            size: 0,
        }
    }

    #[test]
    fn all_takes_everything_and_ids_only_matching_envelopes() {
        assert!(Selection::All.takes(&letter(None)));
        let ids = Selection::Ids(["a".to_owned()].into());
        assert!(ids.takes(&letter(Some("a"))));
        assert!(!ids.takes(&letter(Some("b"))));
        assert!(!ids.takes(&letter(None)));
    }
}
