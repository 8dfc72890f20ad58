//! `history`: a user's audit trail (who changed what, when), oldest first.

use serde_json::Value;
use uuid::Uuid;

use super::OpsError;
use crate::store;

/// The audit records about `user_id`, as JSON objects.
pub async fn history(database_url: &str, user_id: Uuid) -> Result<Vec<Value>, OpsError> {
    let pool = store::connect(database_url, 1).await?;
    let records = store::audit::history(&pool, user_id).await;
    pool.close().await;
    Ok(records?)
}
