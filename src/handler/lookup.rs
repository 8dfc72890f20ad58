//! `check_email`: does an address exist, without revealing other tenants' data.

use serde_json::json;

use super::participants::load_actor;
use super::{Ctx, Outcome};
use crate::domain::email::EmailAddress;
use crate::store::{Tx, users};

/// `check_email`: `exists` and `same_organization` for anyone; `status` only
/// inside the actor's own organization.
pub(super) async fn check_email(tx: &mut Tx<'_>, ctx: &Ctx, email: &EmailAddress) -> Outcome {
    let actor = load_actor(tx, ctx).await?;
    let found = match &ctx.read.address {
        Some((read, _)) => read.as_ref().map(|u| {
            let status = u.snapshot.status.as_str().to_owned();
            (u.snapshot.organization_id.as_str().to_owned(), status)
        }),
        None => users::find_by_email(tx, email).await?,
    };
    Ok(match found {
        None => json!({"exists": false, "same_organization": false}),
        Some((organization, status)) if organization == actor.snapshot.organization_id.as_str() => {
            json!({"exists": true, "same_organization": true, "status": status})
        }
        Some(_) => json!({"exists": true, "same_organization": false}),
    })
}
