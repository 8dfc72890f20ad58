//! Invitations: invite a user, resend the activation email, activate.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

use super::Fail;
use super::ReadAhead;
use super::named::NamedUsers;
use super::participants::{load_actor, load_actor_and_organization, load_target, note_user};
use super::tokens::{issue_token, new_secret, redeem};
use super::{Ctx, Effects, FunnelStep, HandlerSettings, Outcome, email_time};
use crate::domain::authz;
use crate::domain::command::{Command, InviteUser};
use crate::domain::email::EmailAddress;
use crate::domain::event::EventType;
use crate::domain::ids::{OrganizationId, UserId};
use crate::domain::mail_cap;
use crate::domain::name;
use crate::domain::notification::{EmailJob, Template};
use crate::domain::reply::{Reason, Rejection};
use crate::domain::token::{SecretToken, TokenPurpose};
use crate::domain::user::{self, UserStatus};
use crate::store::accounts::OrganizationAccounts;
use crate::store::audit::AuditEntry;
use crate::store::fingerprint::Fingerprint;
use crate::store::users::{InvitedUsers, NewUserRow, UserRecord};
use crate::store::{StoreError, Tx, accounts, tokens, users};

/// The activation email for a user.
pub(super) struct ActivationEmail<'a> {
    /// Whom it activates.
    pub user_id: UserId,
    /// Where it goes.
    pub email: &'a str,
    /// The greeting's first name.
    pub first_name: &'a str,
    /// The recipient's last name, for the address line.
    pub last_name: &'a str,
    /// The template's language.
    pub locale: &'a str,
    /// The organization the user joins.
    pub organization_name: &'a str,
    /// Who invited the user, by name; `None` for an onboarded manager.
    pub inviter_name: Option<String>,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    /// A resend rather than the first invitation.
    pub resend: bool,
}

impl ActivationEmail<'_> {
    pub(super) fn job(self, token: &SecretToken) -> EmailJob {
        let to_name = name::display_name(self.first_name, self.last_name);
        let mut vars = json!({
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "organization_name": self.organization_name,
            "expires_at": email_time(self.expires_at),
            "resend": self.resend,
        });
        if let (Some(name), Value::Object(map)) = (self.inviter_name, &mut vars) {
            map.insert("inviter_name".into(), Value::String(name));
        }
        EmailJob {
            template: Template::Activation,
            locale: self.locale.to_owned(),
            to: self.email.to_owned(),
            to_name,
            vars,
            token: Some(token.expose().to_owned()),
            user_id: Some(self.user_id.to_string()),
        }
    }
}

/// What consecutive invites in one transaction share: the acting managers
/// (locked by the transaction once loaded, with their rows' fingerprints)
/// and the organizations' accounts. An invite changes neither, so the batch
/// keeps them until a command of another kind runs (see `handler::batch`),
/// which clears them. In a batch the invited users themselves wait here
/// too, to be written in one statement before any other kind of command
/// runs and before the commit. The handler also keeps what committed
/// invites read (see `handler::one_statement`), to write later invites
/// against it once the database confirms it is unchanged.
#[derive(Debug, Default)]
pub(super) struct InviteCache {
    actors: HashMap<UserId, (Arc<UserRecord>, Fingerprint)>,
    organizations: HashMap<OrganizationId, Arc<OrganizationAccounts>>,
    deferred: Option<InvitedUsers>,
    /// The other users the batch's commands name (see `handler::named`).
    pub(super) named: NamedUsers,
}

/// How many actors, and organizations, the handler's cache keeps at most.
const REMEMBERED: usize = 1024;

impl InviteCache {
    /// A cache that keeps invited users back for [`InviteCache::take_deferred`]
    /// instead of writing each at once.
    pub(super) fn deferring() -> InviteCache {
        InviteCache {
            deferred: Some(InvitedUsers::default()),
            ..InviteCache::default()
        }
    }

    /// The invited users kept back so far, to be written now.
    pub(super) fn take_deferred(&mut self) -> InvitedUsers {
        self.deferred
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Reads, in one round trip, the actors and the invites'
    /// organizations of a batch's `commands` (actor, organization if an
    /// invite) that this cache does not hold yet: the commands then find
    /// them here instead of reading one by one.
    pub(super) async fn read_ahead<'a>(
        &mut self,
        tx: &mut Tx<'_>,
        commands: impl Iterator<Item = (UserId, Option<&'a OrganizationId>)>,
    ) -> Result<(), StoreError> {
        let mut actors = Vec::new();
        let mut organizations: Vec<&str> = Vec::new();
        let mut wanted: Vec<&OrganizationId> = Vec::new();
        for (actor, organization) in commands {
            if !self.actors.contains_key(&actor) && !actors.contains(&actor.as_uuid()) {
                actors.push(actor.as_uuid());
            }
            let Some(organization) = organization else {
                continue;
            };
            let id = organization.as_str();
            if !self.organizations.contains_key(organization) && !organizations.contains(&id) {
                organizations.push(id);
                wanted.push(organization);
            }
        }
        if actors.is_empty() && organizations.is_empty() {
            return Ok(());
        }
        let (found_actors, found_organizations) =
            users::load_actors_and_organizations(tx, &actors, &organizations).await?;
        for (actor, fingerprint) in found_actors {
            self.keep_actor(actor, fingerprint);
        }
        for (id, organization) in found_organizations {
            if let Some(id) = wanted.iter().find(|w| w.as_str() == id) {
                self.keep_organization(id, organization);
            }
        }
        Ok(())
    }

    /// Whether an invite held back is to `email`.
    pub(super) fn holds_email(&self, email: &EmailAddress) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|held| held.holds_email_key(email.key().as_str()))
    }

    /// Forgets what `command` may change before it runs: the actors and
    /// organizations for a change of accounts, access or membership or an
    /// activation (an actor read as invited may act once it ran), the
    /// edited user for a profile change (its name is an inviter's name).
    /// Tokens, resends and lookups change no active user's row.
    pub(super) fn before(&mut self, command: &Command) {
        self.named.before(command);
        match command {
            Command::InviteUser(_)
            | Command::CheckEmail { .. }
            | Command::RequestPasswordReset { .. }
            | Command::RedeemPasswordReset { .. }
            | Command::ResendActivation { .. } => {}
            Command::UpdateProfile { user_id, .. } => {
                self.actors.remove(user_id);
            }
            _ => self.clear(),
        }
    }

    /// Forgets everything (another kind of command may change it).
    pub(super) fn clear(&mut self) {
        self.actors.clear();
        self.organizations.clear();
        self.named.clear();
    }

    /// What the batch read ahead for `command` by `actor`.
    pub(super) fn read_for(&self, actor: Option<UserId>, command: &Command) -> ReadAhead {
        ReadAhead {
            actor: self.actor(actor),
            target: match command {
                Command::UpdateProfile { user_id, .. } => self.named.target(*user_id),
                _ => None,
            },
            address: match command {
                Command::CheckEmail { email } | Command::RequestPasswordReset { email } => {
                    self.named.address(email)
                }
                _ => None,
            },
        }
    }

    /// Keeps what `committed` read (its transaction committed), replacing
    /// what this cache had for the same actors and organizations.
    pub(super) fn remember(&mut self, committed: &InviteCache) {
        if self.actors.len() + committed.actors.len() > REMEMBERED
            || self.organizations.len() + committed.organizations.len() > REMEMBERED
        {
            self.clear();
        }
        for (id, actor) in &committed.actors {
            self.actors.insert(*id, actor.clone());
        }
        for (id, organization) in &committed.organizations {
            self.organizations.insert(id.clone(), organization.clone());
        }
    }

    /// The actor and the organization, if both are kept.
    pub(super) fn known(
        &self,
        actor: UserId,
        organization: &OrganizationId,
    ) -> Option<(Arc<UserRecord>, Fingerprint, Arc<OrganizationAccounts>)> {
        let (record, fingerprint) = self.actors.get(&actor)?;
        let found = self.organizations.get(organization)?;
        Some((record.clone(), fingerprint.clone(), found.clone()))
    }

    /// Forgets the actor and the organization (one of them changed).
    pub(super) fn forget(&mut self, actor: UserId, organization: &OrganizationId) {
        self.actors.remove(&actor);
        self.organizations.remove(organization);
    }

    /// The acting user `id`, if this cache holds it.
    pub(super) fn actor(&self, id: Option<UserId>) -> Option<Arc<UserRecord>> {
        self.actors.get(&id?).map(|(actor, _)| actor.clone())
    }

    fn keep_actor(&mut self, actor: UserRecord, fingerprint: Fingerprint) -> Arc<UserRecord> {
        let actor = Arc::new(actor);
        self.actors
            .insert(actor.snapshot.id, (actor.clone(), fingerprint));
        actor
    }

    fn organization(&self, id: &OrganizationId) -> Option<Arc<OrganizationAccounts>> {
        self.organizations.get(id).cloned()
    }

    fn keep_organization(
        &mut self,
        id: &OrganizationId,
        found: OrganizationAccounts,
    ) -> Arc<OrganizationAccounts> {
        let found = Arc::new(found);
        self.organizations.insert(id.clone(), found.clone());
        found
    }
}

/// `invite_user`.
pub(super) async fn invite(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: InviteUser,
    fx: &mut Effects,
    cache: &mut InviteCache,
) -> Outcome {
    // The organization when it was read with the actor (inside: `None`
    // when it does not exist); the first invite of a batch reads both.
    let (actor, read_with_actor) = match cache.actor(ctx.actor) {
        Some(actor) => (actor, None),
        None => {
            let (actor, fingerprint, organization) =
                load_actor_and_organization(tx, ctx, &c.organization_id).await?;
            (cache.keep_actor(actor, fingerprint), Some(organization))
        }
    };
    authz::check_manages(&actor.snapshot, &c.organization_id, &c.scope)?;
    let organization = match (read_with_actor, cache.organization(&c.organization_id)) {
        (None, Some(organization)) => organization,
        (read, _) => {
            let found = match read {
                Some(read) => read,
                None => accounts::organization_with_accounts(tx, &c.organization_id).await?,
            };
            let found =
                found.ok_or_else(|| Rejection::new(Reason::NotFound, "no such organization"))?;
            cache.keep_organization(&c.organization_id, found)
        }
    };
    let c = authorized(c, &actor, &organization)?;
    match cache.deferred.as_mut() {
        // In a batch the write waits (the batch stops here if the email was taken).
        Some(deferred) => invited(ctx, settings, c, &actor, &organization, fx, deferred),
        None => {
            let mut one = InvitedUsers::default();
            let data = invited(ctx, settings, c, &actor, &organization, fx, &mut one)?;
            if users::insert_invited_many(tx, &one).await? != [true] {
                return Err(email_taken().into());
            }
            Ok(data)
        }
    }
}

/// `c` with its grant fitted to its scope, if `actor` may make that invite
/// in `organization`.
pub(super) fn authorized(
    c: InviteUser,
    actor: &UserRecord,
    organization: &OrganizationAccounts,
) -> Result<InviteUser, Fail> {
    let grant = authz::decide_invite(
        &actor.snapshot,
        &c.organization_id,
        &c.scope,
        c.grant,
        &organization.graph,
    )?;
    Ok(InviteUser { grant, ..c })
}

/// The invite `c`, authorized for `actor` in `organization`: the user (with its first activation token) is added to
/// `users`, to be written by the caller; its audit row, event and email go
/// to `fx`. Nothing here reads or writes the database.
pub(super) fn invited(
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: InviteUser,
    actor: &UserRecord,
    organization: &OrganizationAccounts,
    fx: &mut Effects,
    users: &mut InvitedUsers,
) -> Outcome {
    let user_id = UserId::new();
    note_user(user_id);
    let expires_at = ctx.now + settings.activation_ttl;
    let token = new_secret()?;
    let token_hash = token.hash();
    users.push(NewUserRow {
        id: user_id,
        organization_id: &c.organization_id,
        scope: &c.scope,
        user: &c.user,
        grant: &c.grant,
        invited_by: Some(actor.snapshot.id),
        activation_expires_at: expires_at,
        activation_token: &token_hash,
        issued_at: ctx.now,
    });
    let access = json!({
        "role": c.grant.role,
        "permissions": c.grant.permissions,
        "contract_accounts": c.grant.contract_accounts,
        "delivery_accounts": c.grant.delivery_accounts,
    });
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: Some(actor.snapshot.id.as_uuid()),
        user_id: Some(user_id.as_uuid()),
        organization_id: c.organization_id.as_str(),
        action: "user.invited",
        before: None,
        after: Some(json!({"status": "invited", "access": access})),
    });
    fx.funnel(FunnelStep::Invited);
    fx.event(
        EventType::UserInvited,
        user_id,
        json!({
            "user_id": user_id,
            "organization_id": c.organization_id,
            "delivery_account_id": c.scope.delivery_account(),
            "type": c.user.kind,
            "role": c.grant.role,
            "permissions": c.grant.permissions,
            "contract_accounts": c.grant.contract_accounts,
            "delivery_accounts": c.grant.delivery_accounts,
            "invited_by": actor.snapshot.id,
            "activation_expires_at": expires_at,
        }),
    );
    fx.email(
        ActivationEmail {
            user_id,
            email: c.user.email.as_str(),
            first_name: c.user.first_name.as_str(),
            last_name: c.user.last_name.as_str(),
            locale: c.user.locale.as_str(),
            organization_name: &organization.name,
            inviter_name: Some(actor.display_name()),
            expires_at,
            resend: false,
        }
        .job(&token),
    );
    Ok(json!({"user_id": user_id, "status": "invited", "activation_expires_at": expires_at}))
}

/// The refusal of an invite whose email address is already a user's.
fn email_taken() -> Rejection {
    Rejection::new(
        Reason::EmailTaken,
        "a user with this email address already exists",
    )
}

/// `resend_activation`.
pub(super) async fn resend(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    user_id: UserId,
    fx: &mut Effects,
) -> Outcome {
    let actor = load_actor(tx, ctx).await?;
    let target = load_target(tx, user_id).await?;
    authz::check_manages_user(&actor.snapshot, &target.snapshot)?;
    let last = tokens::last_issued_at(tx, user_id, TokenPurpose::Activation).await?;
    user::check_resendable(
        target.snapshot.status,
        last,
        ctx.now,
        settings.resend_cooldown,
    )?;
    let issued = tokens::issued_since(tx, user_id, ctx.now - mail_cap::window()).await?;
    mail_cap::check_mail_cap(&issued, ctx.now, settings.mail_cap_per_day)?;
    let expires_at = ctx.now + settings.activation_ttl;
    let token = issue_token(tx, user_id, TokenPurpose::Activation, ctx.now, expires_at).await?;
    users::reinvite(tx, user_id, expires_at).await?;
    let organization_name = accounts::organization_name(tx, &target.snapshot.organization_id)
        .await?
        .unwrap_or_default();
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: Some(actor.snapshot.id.as_uuid()),
        user_id: Some(user_id.as_uuid()),
        organization_id: target.snapshot.organization_id.as_str(),
        action: "user.activation_resent",
        before: Some(json!({"status": target.snapshot.status})),
        after: Some(json!({"status": UserStatus::Invited, "activation_expires_at": expires_at})),
    });
    fx.event(
        EventType::UserActivationResent,
        user_id,
        json!({
            "user_id": user_id,
            "organization_id": target.snapshot.organization_id,
            "resent_by": actor.snapshot.id,
            "previous_status": target.snapshot.status,
            "activation_expires_at": expires_at,
        }),
    );
    fx.email(
        ActivationEmail {
            user_id,
            email: target.snapshot.email.as_str(),
            first_name: &target.first_name,
            last_name: &target.last_name,
            locale: &target.locale,
            organization_name: &organization_name,
            inviter_name: Some(actor.display_name()),
            expires_at,
            resend: true,
        }
        .job(&token),
    );
    Ok(json!({"user_id": user_id, "status": "invited", "activation_expires_at": expires_at}))
}

/// `activate_user`.
pub(super) async fn activate(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    token: Option<SecretToken>,
    fx: &mut Effects,
) -> Outcome {
    let (user_id, hash) = redeem(tx, ctx, token, TokenPurpose::Activation).await?;
    let target = load_target(tx, user_id).await?;
    user::check_activatable(target.snapshot.status)?;
    tokens::mark_used(tx, &hash, ctx.now).await?;
    users::activate(tx, user_id, ctx.now).await?;
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: None,
        user_id: Some(user_id.as_uuid()),
        organization_id: target.snapshot.organization_id.as_str(),
        action: "user.activated",
        before: Some(json!({"status": target.snapshot.status})),
        after: Some(json!({"status": UserStatus::Active})),
    });
    let waited = (ctx.now - target.created_at).to_std().unwrap_or_default();
    fx.funnel(FunnelStep::Activated(waited));
    fx.event(
        EventType::UserActivated,
        user_id,
        json!({
            "user_id": user_id,
            "organization_id": target.snapshot.organization_id,
            "activated_at": ctx.now,
            "invited_at": target.created_at,
        }),
    );
    Ok(json!({"user_id": user_id, "email": target.snapshot.email}))
}
