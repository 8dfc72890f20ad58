//! Organizations and their contract and delivery accounts.

use sqlx::Row;
use sqlx::types::Json;
use std::collections::{BTreeMap, BTreeSet};

use super::fingerprint::Fingerprint;
use super::{StoreError, Tx};
use crate::domain::command::AccountSpec;
use crate::domain::ids::OrganizationId;
use crate::domain::rights::AccountGraph;

/// Inserts an organization. False when it exists already.
pub async fn insert_organization(
    tx: &mut Tx<'_>,
    id: &OrganizationId,
    name: &str,
) -> Result<bool, StoreError> {
    let n =
        sqlx::query("INSERT INTO organizations (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(id.as_str())
            .bind(name)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// The organization's name, locking its row so that changes that count
/// managers (remove, demote) are serialized per organization.
pub async fn lock_organization(
    tx: &mut Tx<'_>,
    id: &OrganizationId,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1 FOR UPDATE")
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// The organization's name, if it exists.
pub async fn organization_name(
    tx: &mut Tx<'_>,
    id: &OrganizationId,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Upserts contract and delivery accounts of `organization`.
pub async fn upsert(
    tx: &mut Tx<'_>,
    organization: &OrganizationId,
    contract: &[AccountSpec],
    delivery: &[AccountSpec],
) -> Result<(), StoreError> {
    for a in contract {
        sqlx::query(
            "INSERT INTO contract_accounts (organization_id, id, name) VALUES ($1, $2, $3)
             ON CONFLICT (organization_id, id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()",
        )
        .bind(organization.as_str())
        .bind(a.id.as_str())
        .bind(&a.name)
        .execute(&mut **tx)
        .await?;
    }
    for a in delivery {
        let links: Vec<&str> = a.contract_accounts.iter().map(|c| c.as_str()).collect();
        sqlx::query(
            "INSERT INTO delivery_accounts (organization_id, id, name, contract_accounts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (organization_id, id) DO UPDATE
             SET name = EXCLUDED.name, contract_accounts = EXCLUDED.contract_accounts, updated_at = now()",
        )
        .bind(organization.as_str())
        .bind(a.id.as_str())
        .bind(&a.name)
        .bind(links)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The organization's account graph: its contract accounts, and the
/// contract accounts each delivery account is linked to.
pub async fn account_graph(
    tx: &mut Tx<'_>,
    organization: &OrganizationId,
) -> Result<AccountGraph, StoreError> {
    let rows = sqlx::query(
        "SELECT id, NULL::text[] AS links FROM contract_accounts WHERE organization_id = $1
         UNION ALL SELECT id, contract_accounts FROM delivery_accounts WHERE organization_id = $1",
    )
    .bind(organization.as_str())
    .fetch_all(&mut **tx)
    .await?;
    let mut graph = AccountGraph::default();
    for r in rows {
        let id: String = r.try_get("id")?;
        match r.try_get::<Option<Vec<String>>, _>("links")? {
            None => {
                graph.contract.insert(id);
            }
            Some(links) => {
                graph.delivery.insert(id, links.into_iter().collect());
            }
        }
    }
    Ok(graph)
}

/// An organization's name and its account graph, as an invite checks them.
#[derive(Debug, Clone)]
pub struct OrganizationAccounts {
    /// The organization's name (for the activation email).
    pub name: String,
    /// Its accounts and their links.
    pub graph: AccountGraph,
    /// The fingerprint of both, to check later that they are unchanged.
    pub fingerprint: Fingerprint,
}

/// The statement that reads an organization's name, its account ids (each
/// delivery account with its linked contract accounts) and their
/// fingerprint, the organization's id bound as `$id` (a literal such as
/// `"$1"`); its columns are read by [`organization_from_row`]. The ids are
/// sorted so that the same accounts always give the same fingerprint.
macro_rules! organization_accounts {
    ($id:literal) => {
        concat!(
            "SELECT accounts_of, organization_name, known_contract, known_delivery,
                md5(ROW(organization_name, known_contract, known_delivery)::text)
                    AS organization_fingerprint
             FROM (SELECT o.id AS accounts_of, o.name AS organization_name,
                COALESCE((SELECT array_agg(c.id ORDER BY c.id) FROM contract_accounts c
                    WHERE c.organization_id = o.id), '{}') AS known_contract,
                COALESCE((SELECT jsonb_object_agg(d.id, d.contract_accounts ORDER BY d.id)
                    FROM delivery_accounts d WHERE d.organization_id = o.id), '{}')
                    AS known_delivery
             FROM organizations o WHERE o.id = ",
            $id,
            ") AS found"
        )
    };
}
pub(super) use organization_accounts;

/// The organization in a row of [`organization_accounts`]' columns; `None`
/// when they are null (it does not exist).
pub(super) fn organization_from_row(
    row: &sqlx::postgres::PgRow,
) -> Result<Option<OrganizationAccounts>, StoreError> {
    let Some(name) = row.try_get::<Option<String>, _>("organization_name")? else {
        return Ok(None);
    };
    let contract: Vec<String> = row.try_get("known_contract")?;
    let Json(delivery): Json<BTreeMap<String, BTreeSet<String>>> = row.try_get("known_delivery")?;
    Ok(Some(OrganizationAccounts {
        name,
        graph: AccountGraph {
            contract: contract.into_iter().collect(),
            delivery,
        },
        fingerprint: Fingerprint::from_db(row.try_get("organization_fingerprint")?),
    }))
}

/// The organization's name and its account graph, in one round trip; `None` when it does not exist.
pub async fn organization_with_accounts(
    tx: &mut Tx<'_>,
    id: &OrganizationId,
) -> Result<Option<OrganizationAccounts>, StoreError> {
    let row = sqlx::query(organization_accounts!("$1"))
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row
        .as_ref()
        .map(organization_from_row)
        .transpose()?
        .flatten())
}
