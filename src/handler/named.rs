//! The users a batch's commands name, read before the first of them.
//!
//! A profile change locks its target, a password reset the user with its
//! address, a lookup reads the user with its address: one round trip each,
//! while the batch's transaction waits. A batch reads them all in one
//! statement first (`store::users::read_named`), locked as each command
//! would lock them. A command then finds its user here, as the earlier
//! commands of the batch left it: whatever a command changes is forgotten
//! before a later one could read it (see [`NamedUsers::forget_for`]), and
//! that one reads it from the database again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::command::Command;
use crate::domain::email::EmailAddress;
use crate::domain::ids::UserId;
use crate::store::users::{self, UserRecord};
use crate::store::{StoreError, Tx};

/// A user found by email: `None` when nobody has the address; whether its
/// row is locked (as a reset locks it) or only read (as a lookup reads it).
pub(crate) type Address = (Option<Arc<UserRecord>>, bool);

/// What a batch read ahead about the users its commands name.
#[derive(Debug, Default)]
pub(super) struct NamedUsers {
    /// Profile changes' targets by id, locked.
    targets: HashMap<UserId, Arc<UserRecord>>,
    /// Users by email key.
    addresses: HashMap<String, Address>,
}

/// What a command changes among the users a batch read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Changes {
    /// No user's row.
    Nothing,
    /// This user's row.
    User(UserId),
    /// Users it cannot name before it runs (or many).
    Anyone,
}

impl NamedUsers {
    /// Reads, in one round trip, the users `commands` name by id or email.
    pub(super) async fn read<'a>(
        &mut self,
        tx: &mut Tx<'_>,
        commands: impl Iterator<Item = &'a Command>,
    ) -> Result<(), StoreError> {
        let (mut ids, mut locked, mut looked_up) = (Vec::new(), Vec::new(), Vec::new());
        for command in commands {
            match command {
                Command::UpdateProfile { user_id, .. } => ids.push(user_id.as_uuid()),
                Command::RequestPasswordReset { email } => locked.push(key(email)),
                Command::CheckEmail { email } => looked_up.push(key(email)),
                _ => {}
            }
        }
        if ids.is_empty() && locked.is_empty() && looked_up.is_empty() {
            return Ok(());
        }
        let locked_refs: Vec<&str> = locked.iter().map(String::as_str).collect();
        let looked_up_refs: Vec<&str> = looked_up.iter().map(String::as_str).collect();
        let found = users::read_named(tx, &ids, &locked_refs, &looked_up_refs).await?;
        // Nobody has the addresses not found; a locked read wins over a lookup.
        for key in looked_up {
            self.addresses.insert(key, (None, false));
        }
        for key in locked {
            self.addresses.insert(key, (None, true));
        }
        for (user, key, is_locked) in found {
            let user = Arc::new(user);
            if is_locked && ids.contains(&user.snapshot.id.as_uuid()) {
                self.targets.insert(user.snapshot.id, user.clone());
            }
            if let Some(entry) = self.addresses.get_mut(&key)
                && entry.1 == is_locked
            {
                entry.0 = Some(user);
            }
        }
        Ok(())
    }

    /// The target of a profile change of `id`, as read ahead.
    pub(super) fn target(&self, id: UserId) -> Option<Arc<UserRecord>> {
        self.targets.get(&id).cloned()
    }

    /// The user with `email`, as read ahead.
    pub(super) fn address(&self, email: &EmailAddress) -> Option<Address> {
        self.addresses.get(&key(email)).cloned()
    }

    /// Forgets, before `command` runs, what an earlier read says about the
    /// address it invites (nobody had it; now its invite will).
    pub(super) fn before(&mut self, command: &Command) {
        if let Command::InviteUser(c) = command {
            self.addresses.remove(&key(&c.user.email));
        }
    }

    /// Forgets, once a command ran, the users it `changed`.
    pub(super) fn forget_for(&mut self, changed: Changes) {
        match changed {
            Changes::Nothing => {}
            Changes::User(id) => {
                self.targets.remove(&id);
                self.addresses
                    .retain(|_, (user, _)| user.as_ref().is_none_or(|u| u.snapshot.id != id));
            }
            Changes::Anyone => self.clear(),
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.targets.clear();
        self.addresses.clear();
    }
}

/// What `command` changes among users' rows.
pub(super) fn changes(command: &Command) -> Changes {
    match command {
        Command::CheckEmail { .. }
        | Command::RequestPasswordReset { .. }
        | Command::RedeemPasswordReset { .. }
        | Command::InviteUser(_) => Changes::Nothing,
        Command::UpdateProfile { user_id, .. } | Command::ResendActivation { user_id } => {
            Changes::User(*user_id)
        }
        _ => Changes::Anyone,
    }
}

fn key(email: &EmailAddress) -> String {
    email.key().as_str().to_owned()
}
