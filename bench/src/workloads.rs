//! The workloads of the throughput runs (`--workload`), each a list of
//! commands built before its run: who sends what, in which order, and what
//! each command's reply must be. Pure: no broker, no database.
//!
//! - `single`: one manager invites N users into its organization (the
//!   figure the benchmark has always measured);
//! - `managers`: N invites interleaved over many organizations' managers,
//!   each into its own organization;
//! - `mix`: N commands of four types interleaved over the organizations,
//!   a set share of them refused (`request_password_reset` for addresses
//!   nobody has: `not_found`);
//! - `duplicates`: the commands of an earlier run published again, same
//!   ids and bodies: every reply is the stored one, marked a duplicate.

use serde_json::{Value, json};
use user_lifecycle::broker::client::CommandClient;

/// A workload of the throughput runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Workload {
    /// One manager, N invites into its organization.
    Single,
    /// N invites interleaved over the organizations' managers.
    Managers,
    /// N commands of four types over the organizations, some refused.
    Mix,
    /// The previous run of N commands published again.
    Duplicates,
}

impl Workload {
    /// Every workload, in the order they run.
    pub const ALL: [Workload; 4] = [
        Workload::Single,
        Workload::Managers,
        Workload::Mix,
        Workload::Duplicates,
    ];

    /// Its name on the command line, in the table and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Single => "single",
            Workload::Managers => "managers",
            Workload::Mix => "mix",
            Workload::Duplicates => "duplicates",
        }
    }

    /// The least share of `single`'s commands/s end to end it should reach.
    pub fn target_vs_single(self) -> Option<f64> {
        match self {
            Workload::Single => None,
            Workload::Managers => Some(0.90),
            Workload::Mix => Some(0.80),
            Workload::Duplicates => Some(1.50),
        }
    }

    /// The workloads to run, in their order, each once; none named means all.
    pub fn selection(named: &[Workload]) -> Vec<Workload> {
        let mut chosen = if named.is_empty() {
            Workload::ALL.to_vec()
        } else {
            named.to_vec()
        };
        chosen.sort();
        chosen.dedup();
        chosen
    }

    /// Does it need the organizations that the setup onboards?
    pub fn needs_organizations(self) -> bool {
        matches!(self, Workload::Managers | Workload::Mix)
    }
}

/// The most worker CPU per 1,000 commands the mix may cost, as a multiple of `single`'s.
pub const MIX_CPU_VS_SINGLE: f64 = 1.2;
/// The reply p99 the mix must stay under at the offered rate, ms.
pub const MIX_REPLY_P99_MS: f64 = 25.0;

/// What a command's reply must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// `None`: `applied`; else the reason code of its refusal.
    pub refused: Option<&'static str>,
    /// Whether the reply is the stored one, marked `"duplicate": true`.
    pub duplicate: bool,
}

impl Expect {
    /// `applied`, for the first time.
    pub const APPLIED: Expect = Expect {
        refused: None,
        duplicate: false,
    };

    /// Refused with `code`, for the first time.
    pub const fn refused(code: &'static str) -> Expect {
        Expect {
            refused: Some(code),
            duplicate: false,
        }
    }
}

/// One command as it will be published.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The envelope's `id` (also the message's correlation id).
    pub id: String,
    /// The command type (also the routing key).
    pub kind: &'static str,
    /// The envelope as published.
    pub body: Vec<u8>,
    /// What its reply must say.
    pub expect: Expect,
    /// The address its email goes to, for a command that sends one when
    /// applied (an invite): waited for when applied, and an email there
    /// when it is a duplicate is an error.
    pub mail_to: Option<String>,
}

impl Planned {
    fn new(
        kind: &'static str,
        data: Value,
        actor: Option<&str>,
        expect: Expect,
        mail_to: Option<String>,
    ) -> Planned {
        let envelope = CommandClient::envelope(kind, data, actor);
        let id = envelope["id"].as_str().unwrap_or_default().to_owned();
        Planned {
            id,
            kind,
            body: serde_json::to_vec(&envelope).unwrap_or_default(),
            expect,
            mail_to,
        }
    }
}

/// An organization the setup onboarded, with its manager and users.
#[derive(Debug, Clone)]
pub struct Organization {
    /// Its id.
    pub id: String,
    /// The domain of its users' addresses.
    pub domain: String,
    /// Its (activated) manager's user id.
    pub manager: String,
    /// Users its manager invited in the setup (not activated).
    pub users: Vec<Member>,
}

/// A user of an organization.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its user id.
    pub id: String,
    /// Its address.
    pub email: String,
}

/// Users each organization gets in the setup, for the mix to look up and update.
pub const USERS_PER_ORGANIZATION: usize = 5;

/// The `k`-th organization's id.
pub fn organization_id(k: usize) -> String {
    format!("org-{k:03}")
}

/// The domain of the `k`-th organization's addresses.
pub fn organization_domain(k: usize) -> String {
    format!("org-{k:03}.bench.example")
}

/// The address of the `k`-th organization's manager.
pub fn manager_email(k: usize) -> String {
    format!("manager@{}", organization_domain(k))
}

/// The `onboard_organization` data of the `k`-th organization.
pub fn onboard_data(k: usize) -> Value {
    json!({
        "organization": {"id": organization_id(k), "name": format!("Bench Org {k}")},
        "contract_accounts": [{"id": "CA-1", "name": "Main"}],
        "delivery_accounts": [],
        "manager": {"type": "personal", "email": manager_email(k), "first_name": "Bench",
                    "last_name": format!("Manager {k}"), "phone": "+31201234567", "country": "NL"},
    })
}

/// The `invite_user` data that invites `email` (last name `last_name`) into `organization`.
pub fn invite_data(organization: &str, email: &str, last_name: &str) -> Value {
    json!({
        "organization_id": organization,
        "delivery_account_id": null,
        "user": {"type": "personal", "email": email, "first_name": "Bench", "last_name": last_name,
                 "phone": "+31201234567", "country": "NL"},
        "role": "user",
        "permissions": ["cases.view"],
        "contract_accounts": "all",
        "delivery_accounts": [],
    })
}

/// The address of the `j`-th user the setup invites into the `k`-th organization.
pub fn member_email(k: usize, j: usize) -> String {
    format!("member{j}@{}", organization_domain(k))
}

fn invite(organization: &str, manager: &str, email: String, last_name: &str) -> Planned {
    Planned::new(
        "invite_user",
        invite_data(organization, &email, last_name),
        Some(manager),
        Expect::APPLIED,
        Some(email),
    )
}

/// `single`: `n` invites by `manager` into `organization`, addresses
/// `{tag}{i}@bench.example` (the bodies the benchmark has always sent).
pub fn single(tag: &str, n: usize, organization: &str, manager: &str) -> Vec<Planned> {
    (0..n)
        .map(|i| {
            let email = format!("{tag}{i}@bench.example");
            invite(organization, manager, email, &format!("User {i}"))
        })
        .collect()
}

/// `managers`: `n` invites, the `i`-th by the manager of organization
/// `i mod organizations` into its own organization, distinct addresses.
pub fn managers(tag: &str, n: usize, organizations: &[Organization]) -> Vec<Planned> {
    if organizations.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            let org = &organizations[i % organizations.len()];
            let email = format!("{tag}{i}@{}", org.domain);
            invite(&org.id, &org.manager, email, &format!("User {i}"))
        })
        .collect()
}

/// The command types of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixKind {
    /// `invite_user` of a new address.
    Invite,
    /// `check_email` by a manager.
    Check,
    /// `update_profile` of a user by its manager.
    Update,
    /// `request_password_reset` for an address nobody has: refused `not_found`.
    UnknownReset,
}

/// How many commands of each type a mix of `n` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixShares {
    /// `invite_user`.
    pub invites: usize,
    /// `check_email`.
    pub checks: usize,
    /// `update_profile`.
    pub updates: usize,
    /// `request_password_reset` refused `not_found`.
    pub refused: usize,
}

impl MixShares {
    /// `refusals_pct` % of `n` refused (rounded); the rest invites, checks
    /// and updates as 50 : 20 : 15.
    pub fn of(n: usize, refusals_pct: u8) -> MixShares {
        let refused = ((n as f64) * f64::from(refusals_pct.min(100)) / 100.0).round() as usize;
        let rest = n - refused.min(n);
        let invites = (rest as f64 * 50.0 / 85.0).round() as usize;
        let checks = ((rest as f64 * 20.0 / 85.0).round() as usize).min(rest - invites);
        MixShares {
            invites,
            checks,
            updates: rest - invites - checks,
            refused: refused.min(n),
        }
    }

    /// The types in a fixed pseudo-random order (the same every run).
    pub fn shuffled(self) -> Vec<MixKind> {
        let mut kinds: Vec<MixKind> = [
            (MixKind::Invite, self.invites),
            (MixKind::Check, self.checks),
            (MixKind::Update, self.updates),
            (MixKind::UnknownReset, self.refused),
        ]
        .into_iter()
        .flat_map(|(kind, count)| std::iter::repeat_n(kind, count))
        .collect();
        let mut random = SplitMix64(27);
        for i in (1..kinds.len()).rev() {
            let j = (random.next() % (i as u64 + 1)) as usize;
            kinds.swap(i, j);
        }
        kinds
    }
}

/// A small deterministic generator (SplitMix64): the mix's order must be
/// the same in every run, so that runs compare.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `mix`: `n` commands in the order of [`MixShares::shuffled`], the `i`-th
/// in organization `i mod organizations` (round-robin): invites of new
/// addresses, `check_email` by the manager (every other one for one of its
/// users, else for an address nobody has), `update_profile` of one of its
/// users' last name to a value of its own (so that it really changes), and
/// `request_password_reset` for an address nobody has, refused `not_found`.
pub fn mix(tag: &str, n: usize, organizations: &[Organization], refusals_pct: u8) -> Vec<Planned> {
    if organizations.is_empty() {
        return Vec::new();
    }
    let mut checks = 0usize;
    let mut updates = 0usize;
    MixShares::of(n, refusals_pct)
        .shuffled()
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let org = &organizations[i % organizations.len()];
            let round = i / organizations.len();
            match kind {
                MixKind::Invite => {
                    let email = format!("{tag}{i}@{}", org.domain);
                    invite(&org.id, &org.manager, email, &format!("User {i}"))
                }
                MixKind::Check => {
                    checks += 1;
                    let email = match org.users.get(round % org.users.len().max(1)) {
                        Some(member) if checks % 2 == 1 => member.email.clone(),
                        _ => format!("nobody-{tag}{i}@{}", org.domain),
                    };
                    let data = json!({"email": email});
                    Planned::new(
                        "check_email",
                        data,
                        Some(&org.manager),
                        Expect::APPLIED,
                        None,
                    )
                }
                MixKind::Update => {
                    updates += 1;
                    // A manager may change its own profile too: the
                    // fallback for an organization without users.
                    let target = org
                        .users
                        .get(updates % org.users.len().max(1))
                        .map_or(org.manager.as_str(), |m| m.id.as_str());
                    let data = json!({"user_id": target, "last_name": format!("Renamed {tag}{i}")});
                    Planned::new(
                        "update_profile",
                        data,
                        Some(&org.manager),
                        Expect::APPLIED,
                        None,
                    )
                }
                MixKind::UnknownReset => {
                    let data = json!({"email": format!("unknown-{tag}{i}@{}", org.domain)});
                    Planned::new(
                        "request_password_reset",
                        data,
                        None,
                        Expect::refused("not_found"),
                        None,
                    )
                }
            }
        })
        .collect()
}

/// `duplicates`: `previous` again, same ids and bodies, every reply
/// expected as it was then, marked a duplicate (and no email sent).
pub fn duplicates(previous: &[Planned]) -> Vec<Planned> {
    previous
        .iter()
        .map(|p| Planned {
            expect: Expect {
                duplicate: true,
                ..p.expect
            },
            ..p.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn organizations(count: usize) -> Vec<Organization> {
        (0..count)
            .map(|k| Organization {
                id: organization_id(k),
                domain: organization_domain(k),
                manager: uuid::Uuid::new_v4().to_string(),
                users: (0..USERS_PER_ORGANIZATION)
                    .map(|j| Member {
                        id: uuid::Uuid::new_v4().to_string(),
                        email: member_email(k, j),
                    })
                    .collect(),
            })
            .collect()
    }

    fn envelope(p: &Planned) -> Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    fn count(plan: &[Planned], kind: &str) -> usize {
        plan.iter().filter(|p| p.kind == kind).count()
    }

    fn assert_unique_ids(plan: &[Planned]) {
        let ids: HashSet<&str> = plan.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), plan.len(), "every command has an id of its own");
        for p in plan {
            let env = envelope(p);
            assert_eq!(env["id"], p.id.as_str(), "the id is the envelope's");
            assert_eq!(env["type"], p.kind, "the routing key is the type");
        }
    }

    #[test]
    fn the_selection_runs_each_named_workload_once_in_the_fixed_order_and_all_by_default() {
        use Workload::*;
        assert_eq!(
            Workload::selection(&[]),
            vec![Single, Managers, Mix, Duplicates]
        );
        assert_eq!(
            Workload::selection(&[Duplicates, Mix, Single, Mix]),
            vec![Single, Mix, Duplicates]
        );
        let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(names, ["single", "managers", "mix", "duplicates"]);
    }

    #[test]
    fn the_mix_refuses_the_set_share_and_keeps_the_others_at_50_20_15() {
        assert_eq!(
            MixShares::of(3000, 15),
            MixShares {
                invites: 1500,
                checks: 600,
                updates: 450,
                refused: 450
            }
        );
        assert_eq!(
            MixShares::of(1000, 40),
            MixShares {
                invites: 353,
                checks: 141,
                updates: 106,
                refused: 400
            }
        );
        assert_eq!(MixShares::of(1000, 0).refused, 0);
        assert_eq!(
            MixShares::of(10, 100),
            MixShares {
                invites: 0,
                checks: 0,
                updates: 0,
                refused: 10
            }
        );
        for n in 0..200 {
            for pct in [0, 1, 15, 33, 50, 99, 100] {
                let s = MixShares::of(n, pct);
                assert_eq!(s.invites + s.checks + s.updates + s.refused, n, "{n} {pct}");
            }
        }
    }

    #[test]
    fn the_mix_has_exactly_its_shares_and_expects_exactly_the_resets_refused() {
        let orgs = organizations(7);
        let plan = mix("x", 1000, &orgs, 20);
        assert_eq!(plan.len(), 1000);
        assert_unique_ids(&plan);
        let shares = MixShares::of(1000, 20);
        assert_eq!(count(&plan, "invite_user"), shares.invites);
        assert_eq!(count(&plan, "check_email"), shares.checks);
        assert_eq!(count(&plan, "update_profile"), shares.updates);
        assert_eq!(count(&plan, "request_password_reset"), 200);
        for p in &plan {
            let refused = p.kind == "request_password_reset";
            assert_eq!(
                p.expect.refused,
                refused.then_some("not_found"),
                "{}",
                p.kind
            );
            assert!(!p.expect.duplicate);
            assert_eq!(p.mail_to.is_some(), p.kind == "invite_user");
            let env = envelope(p);
            assert_eq!(env.get("actor").is_some(), !refused, "resets are public");
        }
    }

    #[test]
    fn the_mix_interleaves_its_types_and_its_organizations() {
        let orgs = organizations(10);
        let plan = mix("x", 2000, &orgs, 15);
        let longest_run = plan
            .chunk_by(|a, b| a.kind == b.kind)
            .map(<[Planned]>::len)
            .max()
            .unwrap();
        assert!(longest_run <= 12, "a run of {longest_run} alike");
        // Consecutive commands act in different organizations: the actor
        // of each acting command is the manager of organization i mod 10.
        for (i, p) in plan.iter().enumerate() {
            let org = &orgs[i % orgs.len()];
            let env = envelope(p);
            if let Some(actor) = env.get("actor") {
                assert_eq!(actor, org.manager.as_str(), "command {i}");
            }
            let data = &env["data"];
            match p.kind {
                "invite_user" => assert_eq!(data["organization_id"], org.id.as_str()),
                "update_profile" => {
                    let ids: Vec<&str> = org.users.iter().map(|m| m.id.as_str()).collect();
                    assert!(ids.contains(&data["user_id"].as_str().unwrap()));
                }
                _ => assert!(data["email"].as_str().unwrap().ends_with(&org.domain)),
            }
        }
        // Every organization sees every type.
        let mut kinds: HashMap<usize, HashSet<&str>> = HashMap::new();
        for (i, p) in plan.iter().enumerate() {
            kinds.entry(i % orgs.len()).or_default().insert(p.kind);
        }
        assert!(kinds.values().all(|k| k.len() == 4), "{kinds:?}");
        // The same order in every run.
        let again: Vec<&str> = mix("x", 2000, &orgs, 15).iter().map(|p| p.kind).collect();
        assert_eq!(again, plan.iter().map(|p| p.kind).collect::<Vec<_>>());
    }

    #[test]
    fn the_mix_looks_up_known_and_unknown_addresses_and_changes_last_names_to_new_values() {
        let orgs = organizations(3);
        let plan = mix("x", 600, &orgs, 15);
        let known: HashSet<String> = orgs
            .iter()
            .flat_map(|o| o.users.iter().map(|m| m.email.clone()))
            .collect();
        let checked: Vec<String> = plan
            .iter()
            .filter(|p| p.kind == "check_email")
            .map(|p| envelope(p)["data"]["email"].as_str().unwrap().to_owned())
            .collect();
        let of_users = checked.iter().filter(|e| known.contains(*e)).count();
        assert!(
            of_users > 0 && of_users < checked.len(),
            "{of_users} of {}",
            checked.len()
        );
        let names: Vec<String> = plan
            .iter()
            .filter(|p| p.kind == "update_profile")
            .map(|p| {
                envelope(p)["data"]["last_name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "every update sets a new value");
        let resets: Vec<String> = plan
            .iter()
            .filter(|p| p.kind == "request_password_reset")
            .map(|p| envelope(p)["data"]["email"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            resets.iter().all(|e| !known.contains(e)),
            "resets are for unknown addresses"
        );
    }

    #[test]
    fn managers_interleaves_invites_over_the_organizations_each_into_its_own() {
        let orgs = organizations(4);
        let plan = managers("m", 10, &orgs);
        assert_eq!(plan.len(), 10);
        assert_unique_ids(&plan);
        let addresses: HashSet<&String> = plan.iter().filter_map(|p| p.mail_to.as_ref()).collect();
        assert_eq!(addresses.len(), 10, "distinct addresses");
        for (i, p) in plan.iter().enumerate() {
            let env = envelope(p);
            let org = &orgs[i % 4];
            assert_eq!(env["actor"], org.manager.as_str());
            assert_eq!(env["data"]["organization_id"], org.id.as_str());
            assert_eq!(p.expect, Expect::APPLIED);
        }
        assert!(managers("m", 10, &[]).is_empty());
    }

    #[test]
    fn single_sends_the_invites_it_always_sent() {
        let plan = single("t", 3, "bench", "mgr");
        assert_unique_ids(&plan);
        let env = envelope(&plan[2]);
        assert_eq!(env["actor"], "mgr");
        assert_eq!(env["data"]["user"]["email"], "t2@bench.example");
        assert_eq!(env["data"]["user"]["last_name"], "User 2");
        assert_eq!(plan[2].mail_to.as_deref(), Some("t2@bench.example"));
    }

    #[test]
    fn duplicates_reuses_the_ids_and_bodies_and_expects_the_stored_replies_marked() {
        let orgs = organizations(2);
        let first = mix("x", 100, &orgs, 15);
        let again = duplicates(&first);
        assert_eq!(again.len(), first.len());
        for (a, b) in first.iter().zip(&again) {
            assert_eq!((&a.id, a.kind, &a.body), (&b.id, b.kind, &b.body));
            assert_eq!(b.expect.refused, a.expect.refused);
            assert!(b.expect.duplicate);
            assert_eq!(
                a.mail_to, b.mail_to,
                "its address is watched for a stray email"
            );
        }
    }
}
