//! The commands of the contract, parsed from an envelope's `type` and `data`.
//!
//! Parsing here is the edge: a `Command` that exists holds only valid values,
//! so the handler never re-validates. Unknown fields are refused, so a typo
//! such as `firstname` is reported instead of silently doing nothing.

use serde_json::{Map, Value};

use super::access::AccountAccess;
use super::country::CountryCode;
use super::email::EmailAddress;
use super::field_error::FieldError;
use super::ids::{AccountId, OrganizationId, UserId};
use super::locale::Locale;
use super::name::PersonName;
use super::permission::PermissionSet;
use super::phone::PhoneNumber;
use super::rights::Grant;
use super::token::SecretToken;
use super::user::{Role, Scope, UserKind};

/// Who may send a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The portal itself; no end-user actor.
    System,
    /// On behalf of a portal user named by `actor`.
    Actor,
    /// Anyone holding the right token or email (activation, password reset).
    Public,
}

macro_rules! command_types {
    ($($variant:ident => $name:literal, $audience:ident;)*) => {
        /// The `type` of a command envelope.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CommandType { $(#[doc = $name] $variant,)* }

        impl CommandType {
            /// Every command type, for metrics and docs.
            pub const ALL: &'static [CommandType] = &[$(CommandType::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(CommandType::$variant => $name,)* }
            }

            /// Parses the wire name; `None` for an unknown type.
            pub fn parse(s: &str) -> Option<CommandType> {
                match s { $($name => Some(CommandType::$variant),)* _ => None }
            }

            /// Who may send it.
            pub fn audience(self) -> Audience {
                match self { $(CommandType::$variant => Audience::$audience,)* }
            }
        }
    };
}

command_types! {
    OnboardOrganization => "onboard_organization", System;
    SyncAccounts => "sync_accounts", System;
    CheckEmail => "check_email", Actor;
    InviteUser => "invite_user", Actor;
    ResendActivation => "resend_activation", Actor;
    ActivateUser => "activate_user", Public;
    RequestPasswordReset => "request_password_reset", Public;
    RedeemPasswordReset => "redeem_password_reset", Public;
    UpdateProfile => "update_profile", Actor;
    UpdateAccess => "update_access", Actor;
    RemoveUser => "remove_user", Actor;
}

/// A new user's personal information (the contract's `USER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// personal or group.
    pub kind: UserKind,
    /// Unique, case-insensitively, across all organizations.
    pub email: EmailAddress,
    /// First name.
    pub first_name: PersonName,
    /// Last name; may be empty for a group.
    pub last_name: PersonName,
    /// E.164.
    pub phone: PhoneNumber,
    /// ISO 3166-1 alpha-2.
    pub country: CountryCode,
    /// Language of the emails; `en` by default.
    pub locale: Locale,
}

/// A contract or delivery account as the portal describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// The portal's id.
    pub id: AccountId,
    /// Display name.
    pub name: String,
    /// For a delivery account: the contract accounts it belongs to.
    pub contract_accounts: Vec<AccountId>,
}

/// `onboard_organization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardOrganization {
    /// The organization's id (the portal's).
    pub organization_id: OrganizationId,
    /// Its display name.
    pub organization_name: String,
    /// Its contract accounts.
    pub contract_accounts: Vec<AccountSpec>,
    /// Its delivery accounts.
    pub delivery_accounts: Vec<AccountSpec>,
    /// The first manager.
    pub manager: NewUser,
}

/// `sync_accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAccounts {
    /// Whose accounts.
    pub organization_id: OrganizationId,
    /// Contract accounts to upsert.
    pub contract_accounts: Vec<AccountSpec>,
    /// Delivery accounts to upsert.
    pub delivery_accounts: Vec<AccountSpec>,
}

/// `invite_user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteUser {
    /// The organization the user joins.
    pub organization_id: OrganizationId,
    /// My Organization or a delivery account.
    pub scope: Scope,
    /// Personal information.
    pub user: NewUser,
    /// Role, permissions and account access.
    pub grant: Grant,
}

/// `update_profile`: only the fields present change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileChanges {
    /// New first name.
    pub first_name: Option<PersonName>,
    /// New last name (checked against the user's kind by the handler).
    pub last_name: Option<String>,
    /// New phone number as typed; normalised with the user's country.
    pub phone: Option<String>,
    /// New country.
    pub country: Option<CountryCode>,
    /// New locale.
    pub locale: Option<Locale>,
}

/// `update_access`: only the fields present change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessChanges {
    /// New role.
    pub role: Option<Role>,
    /// New permissions.
    pub permissions: Option<PermissionSet>,
    /// New contract account access.
    pub contract_accounts: Option<AccountAccess>,
    /// New delivery account access.
    pub delivery_accounts: Option<AccountAccess>,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create an organization and its first manager.
    OnboardOrganization(OnboardOrganization),
    /// Upsert an organization's accounts.
    SyncAccounts(SyncAccounts),
    /// Does this email exist?
    CheckEmail {
        /// The address to look up.
        email: EmailAddress,
    },
    /// Invite a user.
    InviteUser(InviteUser),
    /// Resend the activation email.
    ResendActivation {
        /// Whose.
        user_id: UserId,
    },
    /// Activate with a token; `None` when the token is not even well-formed.
    ActivateUser {
        /// The token from the email link.
        token: Option<SecretToken>,
    },
    /// Ask for a password reset email.
    RequestPasswordReset {
        /// The user's address.
        email: EmailAddress,
    },
    /// Redeem a password reset token; `None` when not well-formed.
    RedeemPasswordReset {
        /// The token from the email link.
        token: Option<SecretToken>,
    },
    /// Change a profile.
    UpdateProfile {
        /// Whose.
        user_id: UserId,
        /// What changes.
        changes: ProfileChanges,
    },
    /// Change role, permissions or account access.
    UpdateAccess {
        /// Whose.
        user_id: UserId,
        /// What changes.
        changes: AccessChanges,
    },
    /// End a user's portal access; the contact is kept.
    RemoveUser {
        /// Whose.
        user_id: UserId,
    },
}

/// A JSON object being read field by field; refuses unknown fields at the end.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
    seen: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, path: &str) -> Result<Fields<'a>, FieldError> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                path: path.to_owned(),
                seen: Vec::new(),
            }),
            _ => Err(FieldError::new(path, "must be a JSON object")),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn opt(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn req(&mut self, key: &'static str) -> Result<&'a Value, FieldError> {
        let name = self.name(key);
        self.opt(key)
            .ok_or_else(|| FieldError::new(name, "is required"))
    }

    fn req_str(&mut self, key: &'static str) -> Result<&'a str, FieldError> {
        let name = self.name(key);
        self.req(key)?
            .as_str()
            .ok_or_else(|| FieldError::new(name, "must be a string"))
    }

    fn opt_str(&mut self, key: &'static str) -> Result<Option<&'a str>, FieldError> {
        let name = self.name(key);
        match self.opt(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| FieldError::new(name, "must be a string")),
        }
    }

    fn finish(self) -> Result<(), FieldError> {
        match self.map.keys().find(|k| !self.seen.contains(&k.as_str())) {
            Some(unknown) => Err(FieldError::new(self.name(unknown), "is not a known field")),
            None => Ok(()),
        }
    }

    fn within<T>(&self, r: Result<T, FieldError>) -> Result<T, FieldError> {
        if self.path.is_empty() {
            r
        } else {
            r.map_err(|e| e.within(&self.path))
        }
    }
}

impl Command {
    /// Parses `data` for a command of `kind`. Field paths in errors are
    /// relative to `data` (e.g. `user.phone`).
    pub fn parse(kind: CommandType, data: &Value) -> Result<Command, FieldError> {
        if !data.is_object() {
            return Err(FieldError::new("data", "must be a JSON object"));
        }
        let mut f = Fields::new(data, "")?;
        let command = match kind {
            CommandType::OnboardOrganization => onboard_organization(&mut f)?,
            CommandType::SyncAccounts => Command::SyncAccounts(SyncAccounts {
                organization_id: OrganizationId::parse(
                    f.req_str("organization_id")?,
                    "organization_id",
                )?,
                contract_accounts: parse_accounts(
                    f.opt("contract_accounts"),
                    "contract_accounts",
                    false,
                )?,
                delivery_accounts: parse_accounts(
                    f.opt("delivery_accounts"),
                    "delivery_accounts",
                    true,
                )?,
            }),
            CommandType::CheckEmail => Command::CheckEmail {
                email: EmailAddress::parse(f.req_str("email")?)?,
            },
            CommandType::InviteUser => invite_user(&mut f)?,
            CommandType::ResendActivation => Command::ResendActivation {
                user_id: UserId::parse(f.req_str("user_id")?, "user_id")?,
            },
            CommandType::ActivateUser => Command::ActivateUser {
                token: SecretToken::parse(f.req_str("token")?),
            },
            CommandType::RequestPasswordReset => Command::RequestPasswordReset {
                email: EmailAddress::parse(f.req_str("email")?)?,
            },
            CommandType::RedeemPasswordReset => Command::RedeemPasswordReset {
                token: SecretToken::parse(f.req_str("token")?),
            },
            CommandType::UpdateProfile => update_profile(&mut f)?,
            CommandType::UpdateAccess => update_access(&mut f)?,
            CommandType::RemoveUser => Command::RemoveUser {
                user_id: UserId::parse(f.req_str("user_id")?, "user_id")?,
            },
        };
        f.finish()?;
        Ok(command)
    }
}

/// `onboard_organization`: the organization, its accounts and its first manager.
fn onboard_organization(f: &mut Fields<'_>) -> Result<Command, FieldError> {
    let mut org = Fields::new(f.req("organization")?, "organization")?;
    let raw_id = org.req_str("id")?;
    let organization_id = org.within(OrganizationId::parse(raw_id, "id"))?;
    let organization_name = parse_display_name(org.req_str("name")?, "organization.name")?;
    org.finish()?;
    let contract_accounts = parse_accounts(f.opt("contract_accounts"), "contract_accounts", false)?;
    let delivery_accounts = parse_accounts(f.opt("delivery_accounts"), "delivery_accounts", true)?;
    let manager = parse_new_user(f.req("manager")?, "manager")?;
    Ok(Command::OnboardOrganization(OnboardOrganization {
        organization_id,
        organization_name,
        contract_accounts,
        delivery_accounts,
        manager,
    }))
}

/// `invite_user`: who, where, and with what rights.
fn invite_user(f: &mut Fields<'_>) -> Result<Command, FieldError> {
    let organization_id = OrganizationId::parse(f.req_str("organization_id")?, "organization_id")?;
    let scope = match f.opt_str("delivery_account_id")? {
        None => Scope::MyOrganization,
        Some(id) => Scope::DeliveryAccount(AccountId::parse(id, "delivery_account_id")?),
    };
    let user = parse_new_user(f.req("user")?, "user")?;
    let role = parse_role(f.req_str("role")?)?;
    let permissions = parse_permissions(f.req("permissions")?)?;
    let contract_accounts = AccountAccess::parse(f.req("contract_accounts")?, "contract_accounts")?;
    let delivery_accounts = match f.opt("delivery_accounts") {
        Some(v) => AccountAccess::parse(v, "delivery_accounts")?,
        None => AccountAccess::Only(Default::default()),
    };
    Ok(Command::InviteUser(InviteUser {
        organization_id,
        scope,
        user,
        grant: Grant {
            role,
            permissions,
            contract_accounts,
            delivery_accounts,
        },
    }))
}

/// `update_profile`: at least one field to change.
fn update_profile(f: &mut Fields<'_>) -> Result<Command, FieldError> {
    let user_id = UserId::parse(f.req_str("user_id")?, "user_id")?;
    let changes = ProfileChanges {
        first_name: f
            .opt_str("first_name")?
            .map(|s| PersonName::parse(s, "first_name", false))
            .transpose()?,
        last_name: f.opt_str("last_name")?.map(str::to_owned),
        phone: f.opt_str("phone")?.map(str::to_owned),
        country: f.opt_str("country")?.map(CountryCode::parse).transpose()?,
        locale: f.opt_str("locale")?.map(Locale::parse).transpose()?,
    };
    if changes == ProfileChanges::default() {
        return Err(FieldError::new(
            "data",
            "names no field to change (first_name, last_name, phone, country, locale)",
        ));
    }
    Ok(Command::UpdateProfile { user_id, changes })
}

/// `update_access`: at least one of the rights to change.
fn update_access(f: &mut Fields<'_>) -> Result<Command, FieldError> {
    let user_id = UserId::parse(f.req_str("user_id")?, "user_id")?;
    let changes = AccessChanges {
        role: f.opt_str("role")?.map(parse_role).transpose()?,
        permissions: f.opt("permissions").map(parse_permissions).transpose()?,
        contract_accounts: f
            .opt("contract_accounts")
            .map(|v| AccountAccess::parse(v, "contract_accounts"))
            .transpose()?,
        delivery_accounts: f
            .opt("delivery_accounts")
            .map(|v| AccountAccess::parse(v, "delivery_accounts"))
            .transpose()?,
    };
    if changes == AccessChanges::default() {
        return Err(FieldError::new(
            "data",
            "names no field to change (role, permissions, contract_accounts, delivery_accounts)",
        ));
    }
    Ok(Command::UpdateAccess { user_id, changes })
}

fn parse_role(s: &str) -> Result<Role, FieldError> {
    Role::parse(s).ok_or_else(|| FieldError::new("role", "must be \"manager\" or \"user\""))
}

fn parse_permissions(v: &Value) -> Result<PermissionSet, FieldError> {
    let Value::Array(items) = v else {
        return Err(FieldError::new(
            "permissions",
            "must be a list of permission names",
        ));
    };
    let names = items
        .iter()
        .map(|i| i.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| FieldError::new("permissions", "must be a list of permission names"))?;
    PermissionSet::parse(&names)
}

/// A display name of an organization or account: trimmed, 1..=200 chars,
/// one line, and reading as it displays (no format characters).
fn parse_display_name(s: &str, field: &str) -> Result<String, FieldError> {
    // Before trimming: a line separator is whitespace, refused wherever it sits.
    let hidden = super::format_chars::has_hidden_chars(s);
    let s = s.trim();
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.chars().count() > 200 {
        return Err(FieldError::new(field, "must be at most 200 characters"));
    }
    if super::field_error::has_control_chars(s) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    if hidden {
        return Err(FieldError::new(field, super::name::HIDDEN_CHARS));
    }
    Ok(s.to_owned())
}

fn parse_accounts(
    v: Option<&Value>,
    field: &str,
    linked: bool,
) -> Result<Vec<AccountSpec>, FieldError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(items) = v else {
        return Err(FieldError::new(field, "must be a list of accounts"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let mut a = Fields::new(item, &path)?;
        let raw_id = a.req_str("id")?;
        let id = a.within(AccountId::parse(raw_id, "id"))?;
        let name = parse_display_name(a.req_str("name")?, &format!("{path}.name"))?;
        let contract_accounts = if linked {
            match a.opt("contract_accounts") {
                None => Vec::new(),
                Some(Value::Array(ids)) => ids
                    .iter()
                    .enumerate()
                    .map(|(j, id)| {
                        let p = format!("{path}.contract_accounts[{j}]");
                        id.as_str()
                            .ok_or_else(|| {
                                FieldError::new(p.clone(), "must be an account id string")
                            })
                            .and_then(|s| AccountId::parse(s, &p))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(FieldError::new(
                        format!("{path}.contract_accounts"),
                        "must be a list of contract account ids",
                    ));
                }
            }
        } else {
            Vec::new()
        };
        a.finish()?;
        out.push(AccountSpec {
            id,
            name,
            contract_accounts,
        });
    }
    Ok(out)
}

fn parse_new_user(v: &Value, path: &str) -> Result<NewUser, FieldError> {
    let mut u = Fields::new(v, path)?;
    let kind_name = u.name("type");
    let kind = UserKind::parse(u.req_str("type")?)
        .ok_or_else(|| FieldError::new(kind_name, "must be \"personal\" or \"group\""))?;
    let raw_email = u.req_str("email")?;
    let email = u.within(EmailAddress::parse(raw_email))?;
    let raw_first = u.req_str("first_name")?;
    let first_name = u.within(PersonName::parse(raw_first, "first_name", false))?;
    let raw_last = u.opt_str("last_name")?.unwrap_or("");
    let last_name = u.within(PersonName::parse(
        raw_last,
        "last_name",
        kind == UserKind::Group,
    ))?;
    let raw_country = u.req_str("country")?;
    let country = u.within(CountryCode::parse(raw_country))?;
    let raw_phone = u.req_str("phone")?;
    let phone = u.within(PhoneNumber::parse(raw_phone, Some(country)))?;
    let locale = match u.opt_str("locale")? {
        Some(l) => u.within(Locale::parse(l))?,
        None => Locale::default(),
    };
    u.finish()?;
    Ok(NewUser {
        kind,
        email,
        first_name,
        last_name,
        phone,
        country,
        locale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({"type": "personal", "email": "ann@example.com", "first_name": "Ann",
               "last_name": "Smith", "phone": "+31 20 123 4567", "country": "nl"})
    }

    fn invite() -> Value {
        json!({"organization_id": "org-1", "delivery_account_id": null, "user": user(),
               "role": "user", "permissions": ["cases.view"], "contract_accounts": "all",
               "delivery_accounts": []})
    }

    #[test]
    fn every_type_name_round_trips() {
        for t in CommandType::ALL {
            assert_eq!(CommandType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(CommandType::parse("delete_everything"), None);
    }

    #[test]
    fn invite_parses_into_valid_values() {
        let Command::InviteUser(i) = Command::parse(CommandType::InviteUser, &invite()).unwrap()
        else {
            panic!("not an invite");
        };
        assert_eq!(i.scope, Scope::MyOrganization);
        assert_eq!(i.user.phone.as_str(), "+31201234567");
        assert_eq!(i.user.country.as_str(), "NL");
        assert_eq!(i.user.locale.as_str(), "en");
        assert_eq!(i.grant.contract_accounts, AccountAccess::All);
    }

    #[test]
    fn invalid_phone_is_named_with_its_path() {
        let mut v = invite();
        v["user"]["phone"] = json!("12");
        let e = Command::parse(CommandType::InviteUser, &v).unwrap_err();
        assert_eq!(e.field, "user.phone");
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let mut v = invite();
        v["user"]["firstname"] = json!("Ann");
        let e = Command::parse(CommandType::InviteUser, &v).unwrap_err();
        assert_eq!(e.field, "user.firstname");
    }

    #[test]
    fn unknown_permission_is_invalid() {
        let mut v = invite();
        v["permissions"] = json!(["cases.view", "root"]);
        let e = Command::parse(CommandType::InviteUser, &v).unwrap_err();
        assert_eq!(e.field, "permissions");
        assert!(e.message.contains("root"));
    }

    #[test]
    fn group_may_have_empty_last_name_but_a_person_may_not() {
        let mut v = invite();
        v["user"]["last_name"] = json!("");
        assert_eq!(
            Command::parse(CommandType::InviteUser, &v)
                .unwrap_err()
                .field,
            "user.last_name"
        );
        v["user"]["type"] = json!("group");
        assert!(Command::parse(CommandType::InviteUser, &v).is_ok());
    }

    #[test]
    fn malformed_token_parses_as_no_token() {
        assert_eq!(
            Command::parse(CommandType::ActivateUser, &json!({"token": "nope"})).unwrap(),
            Command::ActivateUser { token: None }
        );
        assert_eq!(
            Command::parse(CommandType::ActivateUser, &json!({}))
                .unwrap_err()
                .field,
            "token"
        );
    }

    #[test]
    fn update_profile_needs_a_change() {
        let id = UserId::new().to_string();
        assert!(Command::parse(CommandType::UpdateProfile, &json!({"user_id": id})).is_err());
        assert!(
            Command::parse(
                CommandType::UpdateProfile,
                &json!({"user_id": id, "first_name": "Bo"})
            )
            .is_ok()
        );
    }

    #[test]
    fn data_must_be_an_object() {
        assert!(Command::parse(CommandType::CheckEmail, &json!([1])).is_err());
        assert!(Command::parse(CommandType::CheckEmail, &Value::Null).is_err());
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z@.+ 0-9_-]{0,12}".prop_map(Value::String),
            Just(json!("all")),
            Just(json!("ann@example.com")),
            Just(json!("+31201234567")),
            Just(json!("NL")),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop_oneof![
                Just("user".to_owned()),
                Just("email".to_owned()),
                Just("type".to_owned()),
                Just("phone".to_owned()),
                Just("country".to_owned()),
                Just("first_name".to_owned()),
                Just("organization_id".to_owned()),
                Just("permissions".to_owned()),
                Just("role".to_owned()),
                Just("contract_accounts".to_owned()),
                Just("delivery_accounts".to_owned()),
                Just("user_id".to_owned()),
                Just("token".to_owned()),
                Just("organization".to_owned()),
                Just("manager".to_owned()),
                Just("id".to_owned()),
                Just("name".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn onboard() -> Value {
        json!({"organization": {"id": "org-1", "name": "Acme"},
               "contract_accounts": [{"id": "CA-1", "name": "Acme North"}],
               "delivery_accounts": [{"id": "DA-1", "name": "Depot", "contract_accounts": ["CA-1"]}],
               "manager": user()})
    }

    fn sync() -> Value {
        json!({"organization_id": "org-1",
               "contract_accounts": [{"id": "CA-1", "name": "Acme North"}],
               "delivery_accounts": [{"id": "DA-1", "name": "Depot", "contract_accounts": ["CA-1"]}]})
    }

    /// Every name a command carries: its type, the data, where the name
    /// sits in it (JSON pointer) and the field an error names.
    fn name_fields() -> Vec<(CommandType, Value, &'static str, &'static str)> {
        let profile = json!({"user_id": UserId::new().to_string(), "first_name": "Bo"});
        vec![
            (
                CommandType::OnboardOrganization,
                onboard(),
                "/organization/name",
                "organization.name",
            ),
            (
                CommandType::OnboardOrganization,
                onboard(),
                "/contract_accounts/0/name",
                "contract_accounts[0].name",
            ),
            (
                CommandType::OnboardOrganization,
                onboard(),
                "/delivery_accounts/0/name",
                "delivery_accounts[0].name",
            ),
            (
                CommandType::OnboardOrganization,
                onboard(),
                "/manager/first_name",
                "manager.first_name",
            ),
            (
                CommandType::OnboardOrganization,
                onboard(),
                "/manager/last_name",
                "manager.last_name",
            ),
            (
                CommandType::SyncAccounts,
                sync(),
                "/contract_accounts/0/name",
                "contract_accounts[0].name",
            ),
            (
                CommandType::SyncAccounts,
                sync(),
                "/delivery_accounts/0/name",
                "delivery_accounts[0].name",
            ),
            (
                CommandType::InviteUser,
                invite(),
                "/user/first_name",
                "user.first_name",
            ),
            (
                CommandType::InviteUser,
                invite(),
                "/user/last_name",
                "user.last_name",
            ),
            (
                CommandType::UpdateProfile,
                profile,
                "/first_name",
                "first_name",
            ),
        ]
    }

    #[test]
    fn every_name_field_takes_a_plain_name() {
        for (kind, data, _, field) in name_fields() {
            assert!(Command::parse(kind, &data).is_ok(), "{field}");
        }
    }

    #[test]
    fn a_right_to_left_override_in_an_organization_name_is_refused() {
        let mut v = onboard();
        v["organization"]["name"] = json!("Acme\u{202E}gnp.exe");
        let e = Command::parse(CommandType::OnboardOrganization, &v).unwrap_err();
        assert_eq!(e.field, "organization.name");
        assert_eq!(e.message, crate::domain::name::HIDDEN_CHARS);
    }

    proptest::proptest! {
        #[test]
        fn any_name_with_a_hidden_char_is_refused_naming_its_field(
            which in 0..10usize,
            before in "[A-Za-z ]{0,20}",
            hidden in proptest::sample::select(&[
                '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{2028}', '\u{2029}',
                '\u{200B}', '\u{200D}', '\u{200F}', '\u{2060}', '\u{2064}', '\u{FEFF}',
                '\u{00AD}', '\u{E0041}',
            ][..]),
            after in "[A-Za-z ]{0,20}",
        ) {
            let (kind, mut data, pointer, field) = name_fields().swap_remove(which);
            *data.pointer_mut(pointer).unwrap() = json!(format!("{before}{hidden}{after}"));
            let e = Command::parse(kind, &data).unwrap_err();
            proptest::prop_assert_eq!(e.field, field);
        }

        #[test]
        fn any_data_for_any_type_parses_or_is_refused_naming_a_field(
            data in arbitrary_json(),
            index in 0..CommandType::ALL.len(),
        ) {
            let kind = CommandType::ALL[index];
            if let Err(e) = Command::parse(kind, &data) {
                proptest::prop_assert!(!e.message.is_empty());
            }
        }
    }
}
