//! Commands handed to a `Handler` directly, as the consumer hands over the
//! deliveries that arrived together: for tests that need a batch of a
//! known composition.

use serde_json::Value;
use user_lifecycle::domain::envelope::{self, Envelope};
use user_lifecycle::handler::{BatchItem, HandleError, Handled, Handler, HandlerSettings};

/// A handler on `pool` with the contract's default settings, whose outbox
/// rows wait for any relay (the test's worker delivers them).
pub fn handler(pool: &sqlx::PgPool) -> Handler {
    Handler::new(
        pool.clone(),
        HandlerSettings {
            activation_ttl: chrono::Duration::days(7),
            password_reset_ttl: chrono::Duration::hours(1),
            resend_cooldown: chrono::Duration::seconds(60),
            mail_cap_per_day: 10,
            handoff: None,
        },
    )
}

/// Envelopes parsed as the consumer parses them, with their bodies.
pub struct Batch {
    envelopes: Vec<Envelope>,
    raws: Vec<Vec<u8>>,
    span: tracing::Span,
}

impl Batch {
    /// The batch of `bodies`, in order.
    pub fn of(bodies: &[Value]) -> Batch {
        let raws: Vec<Vec<u8>> = bodies
            .iter()
            .map(|b| serde_json::to_vec(b).unwrap())
            .collect();
        let envelopes = raws
            .iter()
            .map(|raw| envelope::parse(raw).expect("a valid envelope"))
            .collect();
        Batch {
            envelopes,
            raws,
            span: tracing::Span::none(),
        }
    }

    /// Hands the batch to `handler`; one result per command, in order.
    pub async fn handle(&self, handler: &Handler) -> Vec<Result<Handled, HandleError>> {
        let items: Vec<BatchItem<'_>> = self
            .envelopes
            .iter()
            .zip(&self.raws)
            .map(|(envelope, raw)| BatchItem {
                envelope,
                reply_to: None,
                raw,
                span: &self.span,
            })
            .collect();
        let results = handler.handle_batch(&items).await;
        assert_eq!(results.len(), items.len(), "one result per command");
        results
    }
}
