//! Users: load into domain snapshots, insert, and apply state changes.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeSet;
use uuid::Uuid;

use super::accounts::{self, OrganizationAccounts, organization_accounts};
use super::fingerprint::{Fingerprint, user_fingerprint};
use super::{PgQuery, StoreError, Tx};
use crate::domain::access::AccountAccess;
use crate::domain::command::NewUser;
use crate::domain::email::EmailAddress;
use crate::domain::ids::{AccountId, OrganizationId, UserId};
use crate::domain::name;
use crate::domain::permission::PermissionSet;
use crate::domain::rights::Grant;
use crate::domain::token::TokenHash;
use crate::domain::user::{Role, Scope, UserKind, UserSnapshot, UserStatus};

/// A user row: the rules' snapshot plus the profile the emails need.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// What the rules see.
    pub snapshot: UserSnapshot,
    /// personal or group.
    pub kind: UserKind,
    /// First name.
    pub first_name: String,
    /// Last name (may be empty for groups).
    pub last_name: String,
    /// E.164 phone.
    pub phone: String,
    /// ISO country.
    pub country: String,
    /// Email locale.
    pub locale: String,
    /// Who invited it.
    pub invited_by: Option<Uuid>,
    /// When it became active.
    pub activated_at: Option<DateTime<Utc>>,
    /// When it was created (invited).
    pub created_at: DateTime<Utc>,
}

impl AsRef<UserSnapshot> for UserRecord {
    fn as_ref(&self) -> &UserSnapshot {
        &self.snapshot
    }
}

impl UserRecord {
    /// How this user is named to people ([`name::display_name`]).
    pub fn display_name(&self) -> String {
        name::display_name(&self.first_name, &self.last_name)
    }

    /// The profile fields as JSON (for events and the audit trail).
    pub fn profile_json(&self) -> Value {
        json!({
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone": self.phone,
            "country": self.country,
            "locale": self.locale,
        })
    }

    /// The access fields as JSON (for events and the audit trail).
    pub fn access_json(&self) -> Value {
        let s = &self.snapshot;
        json!({
            "role": s.role,
            "permissions": s.permissions,
            "contract_accounts": s.contract_accounts,
            "delivery_accounts": s.delivery_accounts,
        })
    }
}

pub(super) const COLUMNS: &str =
    "id, organization_id, delivery_account_id, kind, email, first_name, last_name,
    phone, country, locale, role, permissions, contract_accounts, delivery_accounts, status,
    invited_by, activated_at, created_at";

fn access(ids: Option<Vec<String>>, field: &str) -> Result<AccountAccess, StoreError> {
    match ids {
        None => Ok(AccountAccess::All),
        Some(ids) => ids
            .iter()
            .map(|i| {
                AccountId::parse(i, field).map_err(|e| StoreError::corrupt("users", e.to_string()))
            })
            .collect::<Result<BTreeSet<_>, _>>()
            .map(AccountAccess::Only),
    }
}

fn from_row(row: &PgRow) -> Result<UserRecord, StoreError> {
    record_from_row(row, "")
}

/// The [`COLUMNS`] of `table`, each named with `prefix` in front (for
/// [`record_from_row`]), to read two users from one row.
pub(super) fn prefixed_columns(table: &str, prefix: &str) -> String {
    COLUMNS
        .split(',')
        .map(|c| format!("{table}.{c} AS {prefix}{c}", c = c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user in `row`'s [`COLUMNS`], each named with `prefix` in front.
pub(super) fn record_from_row(row: &PgRow, prefix: &str) -> Result<UserRecord, StoreError> {
    let bad = |e: &dyn std::fmt::Display| StoreError::corrupt("users", e.to_string());
    let col = |c: &'static str| -> std::borrow::Cow<'static, str> {
        if prefix.is_empty() {
            c.into()
        } else {
            format!("{prefix}{c}").into()
        }
    };
    let id: Uuid = row.try_get(&*col("id"))?;
    let organization_id: String = row.try_get(&*col("organization_id"))?;
    let delivery_account_id: Option<String> = row.try_get(&*col("delivery_account_id"))?;
    let status: String = row.try_get(&*col("status"))?;
    let role: String = row.try_get(&*col("role"))?;
    let kind: String = row.try_get(&*col("kind"))?;
    let email: String = row.try_get(&*col("email"))?;
    let permissions: Vec<String> = row.try_get(&*col("permissions"))?;
    let scope = match delivery_account_id {
        None => Scope::MyOrganization,
        Some(da) => Scope::DeliveryAccount(
            AccountId::parse(&da, "delivery_account_id").map_err(|e| bad(&e))?,
        ),
    };
    let snapshot = UserSnapshot {
        id: UserId(id),
        organization_id: OrganizationId::parse(&organization_id, "organization_id")
            .map_err(|e| bad(&e))?,
        scope,
        role: Role::parse(&role).ok_or_else(|| bad(&format!("role {role}")))?,
        status: UserStatus::parse(&status).ok_or_else(|| bad(&format!("status {status}")))?,
        email: EmailAddress::from_stored(&email).map_err(|e| bad(&e))?,
        permissions: PermissionSet::parse(&permissions).map_err(|e| bad(&e))?,
        contract_accounts: access(
            row.try_get(&*col("contract_accounts"))?,
            "contract_accounts",
        )?,
        delivery_accounts: access(
            row.try_get(&*col("delivery_accounts"))?,
            "delivery_accounts",
        )?,
    };
    Ok(UserRecord {
        snapshot,
        kind: UserKind::parse(&kind).ok_or_else(|| bad(&format!("kind {kind}")))?,
        first_name: row.try_get(&*col("first_name"))?,
        last_name: row.try_get(&*col("last_name"))?,
        phone: row.try_get(&*col("phone"))?,
        country: row.try_get(&*col("country"))?,
        locale: row.try_get(&*col("locale"))?,
        invited_by: row.try_get(&*col("invited_by"))?,
        activated_at: row.try_get(&*col("activated_at"))?,
        created_at: row.try_get(&*col("created_at"))?,
    })
}

/// Loads a user by id, locking its row for the rest of `tx`.
pub async fn lock_by_id(tx: &mut Tx<'_>, id: UserId) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
    )))
    .bind(id.as_uuid())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Loads the acting user, share-locked so it cannot be removed or demoted
/// while its command runs.
pub async fn load_actor(tx: &mut Tx<'_>, id: UserId) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1 FOR SHARE"
    )))
    .bind(id.as_uuid())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Loads the acting user, share-locked as [`load_actor`] does, with its
/// row's fingerprint, and an organization with its account ids, as
/// [`accounts::organization_with_accounts`] does, in one round trip: an
/// invite needs both. Either is `None` when it does not exist.
pub async fn load_actor_and_organization(
    tx: &mut Tx<'_>,
    actor: UserId,
    organization: &OrganizationId,
) -> Result<
    (
        Option<(UserRecord, Fingerprint)>,
        Option<OrganizationAccounts>,
    ),
    StoreError,
> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "WITH actor AS (SELECT {COLUMNS}, {} AS actor_fingerprint
                        FROM users WHERE id = $1 FOR SHARE),
              organization AS ({})
         SELECT actor.*, organization.*
         FROM (SELECT) AS one LEFT JOIN actor ON true LEFT JOIN organization ON true",
        user_fingerprint!("users"),
        organization_accounts!("$2")
    )))
    .bind(actor.as_uuid())
    .bind(organization.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let actor = match row.try_get::<Option<Uuid>, _>("id")? {
        Some(_) => Some((
            from_row(&row)?,
            Fingerprint::from_db(row.try_get("actor_fingerprint")?),
        )),
        None => None,
    };
    Ok((actor, accounts::organization_from_row(&row)?))
}

/// The statement [`load_actors_and_organizations`] runs: each actor through
/// the primary key (a lateral lookup per id, whatever plan the cache
/// kept); public so a test can check its plan.
pub fn actors_and_organizations_sql() -> String {
    format!(
        "WITH actor AS (
             SELECT a.* FROM unnest($1::uuid[]) AS wanted(id),
                 LATERAL (SELECT {COLUMNS}, {} AS actor_fingerprint
                          FROM users WHERE id = wanted.id FOR SHARE) AS a),
              organization AS ({})
         SELECT actor.*, organization.* FROM actor FULL JOIN organization ON false",
        user_fingerprint!("users"),
        organization_accounts!("ANY($2::text[])")
    )
}

/// Loads the acting users `actors`, share-locked as [`load_actor`] does,
/// with their rows' fingerprints, and the organizations `organizations`
/// with their account ids, in one round trip: what a batch's invites need,
/// read before the first of them. Those that do not exist are left out.
pub async fn load_actors_and_organizations(
    tx: &mut Tx<'_>,
    actors: &[Uuid],
    organizations: &[&str],
) -> Result<
    (
        Vec<(UserRecord, Fingerprint)>,
        Vec<(String, OrganizationAccounts)>,
    ),
    StoreError,
> {
    let rows = sqlx::query(AssertSqlSafe(actors_and_organizations_sql()))
        .bind(actors)
        .bind(organizations)
        .fetch_all(&mut **tx)
        .await?;
    let mut found_actors = Vec::with_capacity(actors.len());
    let mut found_organizations = Vec::with_capacity(organizations.len());
    for row in &rows {
        if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
            let fingerprint = Fingerprint::from_db(row.try_get("actor_fingerprint")?);
            found_actors.push((from_row(row)?, fingerprint));
        }
        if let Some(organization) = accounts::organization_from_row(row)? {
            found_organizations.push((row.try_get("accounts_of")?, organization));
        }
    }
    Ok((found_actors, found_organizations))
}

/// What [`read_named`] found: a user, the key of its email, and whether
/// its row is locked (read as `lock_by_id` or `lock_by_email` read it).
pub type NamedUser = (UserRecord, String, bool);

/// The users a batch's commands name, read before the first of them, in
/// one round trip: the users `ids` and those with the email keys `locked`,
/// locked as [`lock_by_id`] and [`lock_by_email`] lock them, and those with
/// the keys `looked_up`, unlocked as [`find_by_email`] reads them. Each
/// through its unique index (a lateral read per id or key).
pub async fn read_named(
    tx: &mut Tx<'_>,
    ids: &[Uuid],
    locked: &[&str],
    looked_up: &[&str],
) -> Result<Vec<NamedUser>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(read_named_sql()))
        .bind(ids)
        .bind(locked)
        .bind(looked_up)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|row| Ok((from_row(row)?, row.try_get("key")?, row.try_get("locked")?)))
        .collect()
}

/// The statement [`read_named`] runs; public so a test can check its plan.
pub fn read_named_sql() -> String {
    format!(
        "SELECT u.*, true AS locked FROM unnest($1::uuid[]) AS wanted(id),
             LATERAL (SELECT {COLUMNS}, email_key AS key FROM users
                      WHERE id = wanted.id FOR UPDATE) AS u
         UNION ALL
         SELECT u.*, true FROM unnest($2::text[]) AS wanted(key),
             LATERAL (SELECT {COLUMNS}, email_key AS key FROM users
                      WHERE email_key = wanted.key FOR UPDATE) AS u
         UNION ALL
         SELECT u.*, false FROM unnest($3::text[]) AS wanted(key),
             LATERAL (SELECT {COLUMNS}, email_key AS key FROM users
                      WHERE email_key = wanted.key LIMIT 1) AS u"
    )
}

/// Loads the user with `email`'s key, locking its row.
pub async fn lock_by_email(
    tx: &mut Tx<'_>,
    email: &EmailAddress,
) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE email_key = $1 FOR UPDATE"
    )))
    .bind(email.key().as_str())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Organization and status of the user with `email`'s key, if any (no lock).
pub async fn find_by_email(
    tx: &mut Tx<'_>,
    email: &EmailAddress,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query("SELECT organization_id, status FROM users WHERE email_key = $1")
        .bind(email.key().as_str())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| Ok((r.try_get("organization_id")?, r.try_get("status")?)))
        .transpose()
}

/// Everything needed to insert an invited user.
#[derive(Debug)]
pub struct NewUserRow<'a> {
    /// New id.
    pub id: UserId,
    /// Its organization.
    pub organization_id: &'a OrganizationId,
    /// Its scope.
    pub scope: &'a Scope,
    /// Profile.
    pub user: &'a NewUser,
    /// Role, permissions, accounts.
    pub grant: &'a Grant,
    /// The inviting manager.
    pub invited_by: Option<UserId>,
    /// When the first activation token expires.
    pub activation_expires_at: DateTime<Utc>,
    /// The hash of that first activation token.
    pub activation_token: &'a TokenHash,
    /// When it was issued (the command's clock).
    pub issued_at: DateTime<Utc>,
}

/// Inserts an invited user with its first activation token, in one
/// statement. False (and nothing written) when the email's key is taken.
pub async fn insert_invited(tx: &mut Tx<'_>, row: NewUserRow<'_>) -> Result<bool, StoreError> {
    let mut users = InvitedUsers::default();
    users.push(row);
    Ok(insert_invited_many(tx, &users).await? == [true])
}

/// Invited users waiting to be written together, column by column: a batch
/// of invites is one statement instead of one per invite.
#[derive(Debug, Default)]
pub struct InvitedUsers {
    ids: Vec<Uuid>,
    organization_ids: Vec<String>,
    delivery_account_ids: Vec<Option<String>>,
    kinds: Vec<&'static str>,
    emails: Vec<String>,
    first_names: Vec<String>,
    last_names: Vec<String>,
    phones: Vec<String>,
    countries: Vec<String>,
    locales: Vec<String>,
    roles: Vec<&'static str>,
    permissions: Vec<Value>,
    contract_accounts: Vec<Option<Value>>,
    delivery_accounts: Vec<Option<Value>>,
    invited_by: Vec<Option<Uuid>>,
    expires_at: Vec<DateTime<Utc>>,
    token_hashes: Vec<Vec<u8>>,
    issued_at: Vec<DateTime<Utc>>,
    email_keys: Vec<String>,
}

impl InvitedUsers {
    /// Adds one invited user (and its first activation token).
    pub fn push(&mut self, row: NewUserRow<'_>) {
        let u = row.user;
        self.ids.push(row.id.as_uuid());
        self.organization_ids
            .push(row.organization_id.as_str().to_owned());
        self.delivery_account_ids
            .push(row.scope.delivery_account().map(|d| d.as_str().to_owned()));
        self.kinds.push(u.kind.as_str());
        self.emails.push(u.email.as_str().to_owned());
        self.first_names.push(u.first_name.as_str().to_owned());
        self.last_names.push(u.last_name.as_str().to_owned());
        self.phones.push(u.phone.as_str().to_owned());
        self.countries.push(u.country.as_str().to_owned());
        self.locales.push(u.locale.as_str().to_owned());
        self.roles.push(row.grant.role.as_str());
        self.permissions
            .push(Value::from(row.grant.permissions.names()));
        self.contract_accounts
            .push(row.grant.contract_accounts.ids().map(Value::from));
        self.delivery_accounts
            .push(row.grant.delivery_accounts.ids().map(Value::from));
        self.invited_by.push(row.invited_by.map(|i| i.as_uuid()));
        self.expires_at.push(row.activation_expires_at);
        self.token_hashes
            .push(row.activation_token.as_bytes().to_vec());
        self.issued_at.push(row.issued_at);
        self.email_keys.push(u.email.key().as_str().to_owned());
    }

    /// Whether one of the users has this email key.
    pub fn holds_email_key(&self, key: &str) -> bool {
        self.email_keys.iter().any(|k| k == key)
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The statements that insert [`InvitedUsers`] (bound as `$1`–`$19` by
/// [`InvitedUsers::bind`]) and their first activation tokens, as `WITH`
/// items: `invited` returns the ids written, in the order they were added.
/// `when` is a condition on the whole input (`""`: none); `taken` says
/// what happens to a user whose email's key is taken (by an existing user
/// or an earlier one of them): `skip` skips it and its token, `fail` makes the
/// statement fail (a unique violation), writing nothing.
macro_rules! invite_ctes {
    (when: $when:literal, taken: skip) => {
        invite_ctes!(@ $when, "ON CONFLICT (email_key) DO NOTHING")
    };
    (when: $when:literal, taken: fail) => {
        invite_ctes!(@ $when, "")
    };
    (@ $when:literal, $on_conflict:literal) => {
        concat!("input AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                 $12::jsonb[], $13::jsonb[], $14::jsonb[], $15::uuid[], $16::timestamptz[],
                 $17::bytea[], $18::timestamptz[], $19::text[])
                 WITH ORDINALITY AS t(id, organization_id, delivery_account_id, kind, email,
                     first_name, last_name, phone, country, locale, role, permissions,
                     contract_accounts, delivery_accounts, invited_by, expires_at, hash,
                     issued_at, email_key, position) ", $when, "),
         invited AS (
             INSERT INTO users (id, organization_id, delivery_account_id, kind, email, email_key,
                 first_name, last_name, phone, country, locale, role, permissions,
                 contract_accounts, delivery_accounts, status, invited_by, activation_expires_at)
             SELECT id, organization_id, delivery_account_id, kind, email, email_key, first_name,
                 last_name, phone, country, locale, role,
                 ARRAY(SELECT jsonb_array_elements_text(permissions)),
                 CASE WHEN contract_accounts IS NOT NULL
                     THEN ARRAY(SELECT jsonb_array_elements_text(contract_accounts)) END,
                 CASE WHEN delivery_accounts IS NOT NULL
                     THEN ARRAY(SELECT jsonb_array_elements_text(delivery_accounts)) END,
                 'invited', invited_by, expires_at
             FROM input ORDER BY position ", $on_conflict, "
             RETURNING id),
         issued AS (
             INSERT INTO tokens (hash, user_id, purpose, created_at, expires_at)
             SELECT input.hash, input.id, 'activation', input.issued_at, input.expires_at
             FROM input JOIN invited USING (id))")
    };
}
pub(super) use invite_ctes;

impl InvitedUsers {
    /// Binds the users as `$1`–`$19` of [`invite_ctes`] (the first parameters of `query`).
    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.organization_ids)
            .bind(&self.delivery_account_ids)
            .bind(&self.kinds)
            .bind(&self.emails)
            .bind(&self.first_names)
            .bind(&self.last_names)
            .bind(&self.phones)
            .bind(&self.countries)
            .bind(&self.locales)
            .bind(&self.roles)
            .bind(&self.permissions)
            .bind(&self.contract_accounts)
            .bind(&self.delivery_accounts)
            .bind(&self.invited_by)
            .bind(&self.expires_at)
            .bind(&self.token_hashes)
            .bind(&self.issued_at)
            .bind(&self.email_keys)
    }

    /// Whether each user was written, in the order they were added, given
    /// the ids the statement returned.
    pub(super) fn written(&self, returned: &std::collections::HashSet<Uuid>) -> Vec<bool> {
        self.ids.iter().map(|id| returned.contains(id)).collect()
    }
}

/// Inserts `users` with their first activation tokens, in one statement and
/// in the order they were added; returns whether each was written, in that
/// order (false: its email's key was taken, by an existing user or by an earlier
/// one of `users`; nothing written for it).
pub async fn insert_invited_many(
    tx: &mut Tx<'_>,
    users: &InvitedUsers,
) -> Result<Vec<bool>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let query = sqlx::query(concat!(
        "WITH ",
        invite_ctes!(when: "", taken: skip),
        " SELECT id FROM invited"
    ));
    let written = users
        .bind(query)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?;
    Ok(users.written(&written))
}

/// Marks an invited or expired user invited again until `expires_at` (resend).
pub async fn reinvite(
    tx: &mut Tx<'_>,
    id: UserId,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    update_at(
        tx,
        "UPDATE users SET status = 'invited', activation_expires_at = $2, updated_at = now() WHERE id = $1",
        id,
        expires_at,
    )
    .await
}

/// Marks a user active.
pub async fn activate(tx: &mut Tx<'_>, id: UserId, at: DateTime<Utc>) -> Result<(), StoreError> {
    update_at(
        tx,
        "UPDATE users SET status = 'active', activated_at = $2, activation_expires_at = NULL,
            updated_at = now() WHERE id = $1",
        id,
        at,
    )
    .await
}

/// Marks a user removed: access gone, contact kept.
pub async fn remove(tx: &mut Tx<'_>, id: UserId, at: DateTime<Utc>) -> Result<(), StoreError> {
    update_at(
        tx,
        "UPDATE users SET status = 'removed', removed_at = $2, activation_expires_at = NULL,
            permissions = '{}', contract_accounts = '{}', delivery_accounts = '{}',
            updated_at = now() WHERE id = $1",
        id,
        at,
    )
    .await
}

/// Writes a user's profile fields.
pub async fn update_profile(tx: &mut Tx<'_>, user: &UserRecord) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET first_name = $2, last_name = $3, phone = $4, country = $5, locale = $6,
            updated_at = now() WHERE id = $1",
    )
    .bind(user.snapshot.id.as_uuid())
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(&user.phone)
    .bind(&user.country)
    .bind(&user.locale)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a user's role, permissions and account access.
pub async fn update_access(tx: &mut Tx<'_>, id: UserId, grant: &Grant) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET role = $2, permissions = $3, contract_accounts = $4, delivery_accounts = $5,
            updated_at = now() WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(grant.role.as_str())
    .bind(grant.permissions.names())
    .bind(grant.contract_accounts.ids())
    .bind(grant.delivery_accounts.ids())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts the organization's active managers of My Organization (a
/// delivery account's managers cannot manage the organization).
pub async fn count_organization_managers(
    tx: &mut Tx<'_>,
    organization_id: &OrganizationId,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE organization_id = $1 AND role = 'manager'
            AND status = 'active' AND delivery_account_id IS NULL",
    )
    .bind(organization_id.as_str())
    .fetch_one(&mut **tx)
    .await?)
}

/// The organization of user `id`, without locking anything.
pub async fn organization_of(
    tx: &mut Tx<'_>,
    id: UserId,
) -> Result<Option<OrganizationId>, StoreError> {
    let org: Option<String> = sqlx::query_scalar("SELECT organization_id FROM users WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(&mut **tx)
        .await?;
    org.map(|o| {
        OrganizationId::parse(&o, "organization_id")
            .map_err(|e| StoreError::corrupt("users", e.to_string()))
    })
    .transpose()
}

/// Runs `sql`, an UPDATE of the user `$1` with the time `$2`.
async fn update_at(
    tx: &mut Tx<'_>,
    sql: &'static str,
    id: UserId,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(sql)
        .bind(id.as_uuid())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
