//! The contract's exchanges and queues, declared by the worker at start.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// The names of everything under one `AMQP_PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// `P` itself: every name below starts with `P.`.
    pub prefix: String,
    /// `P.commands`: topic exchange and its quorum queue.
    pub commands: String,
    /// `P.dead`: fanout dead-letter exchange.
    pub dead: String,
    /// `P.commands.dead`: the dead-letter queue.
    pub dead_queue: String,
    /// `P.events`: topic exchange, routing key = event type.
    pub events: String,
}

impl Topology {
    /// The names for `prefix`.
    pub fn new(prefix: &str) -> Topology {
        Topology {
            prefix: prefix.to_owned(),
            commands: format!("{prefix}.commands"),
            dead: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.commands.dead"),
            events: format!("{prefix}.events"),
        }
    }

    /// Declares the exchanges, queues and bindings (idempotent).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.commands.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.events.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut commands_args = quorum();
        commands_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead.as_str())),
        );
        channel
            .queue_declare(self.commands.as_str().into(), queue, commands_args)
            .await?;
        channel
            .queue_bind(
                self.commands.as_str().into(),
                self.commands.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(self.dead_queue.as_str().into(), queue, quorum())
            .await?;
        channel
            .queue_bind(
                self.dead_queue.as_str().into(),
                self.dead.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

/// Queue arguments that make a queue a quorum queue.
pub fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let t = Topology::new("P");
        assert_eq!(t.commands, "P.commands");
        assert_eq!(t.dead, "P.dead");
        assert_eq!(t.dead_queue, "P.commands.dead");
        assert_eq!(t.events, "P.events");
    }
}
