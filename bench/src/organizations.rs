//! The setup of the `managers` and `mix` workloads, before anything is
//! timed: many organizations onboarded through the worker, each manager
//! activated from its activation email, and a few users invited into each
//! for the mix to look up and update.

use futures_util::future::try_join_all;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::run::{BenchError, activation_email_token};
use crate::workloads::{self, Member, Organization, USERS_PER_ORGANIZATION};
use dev_support::Sink;
use user_lifecycle::broker::client::CommandClient;

/// Organizations onboarded at once (each by a client of its own).
const AT_ONCE: usize = 16;

/// How long one setup command may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Onboards `count` organizations ([`workloads::organization_id`]) through
/// the worker, `AT_ONCE` at a time; activates each manager; invites
/// `USERS_PER_ORGANIZATION` users into each; and waits until every email
/// this sent has arrived, so that none is still going out when the timed
/// runs start.
pub async fn onboard(
    amqp_url: &str,
    prefix: &str,
    sink: &Sink,
    count: usize,
) -> Result<Vec<Organization>, BenchError> {
    let lanes = AT_ONCE.min(count);
    let onboarded = try_join_all((0..lanes).map(|lane| async move {
        let mut client = CommandClient::connect(amqp_url, prefix).await?;
        let mut mine = Vec::new();
        for k in (lane..count).step_by(lanes) {
            mine.push((k, onboard_one(&mut client, sink, k).await?));
        }
        Ok::<_, BenchError>(mine)
    }))
    .await?;
    let mut organizations: Vec<(usize, Organization)> = onboarded.into_iter().flatten().collect();
    organizations.sort_by_key(|(k, _)| *k);
    let organizations: Vec<Organization> = organizations.into_iter().map(|(_, o)| o).collect();
    wait_for_invitations(sink, &organizations).await?;
    Ok(organizations)
}

/// Sends `envelope` and returns its reply's data; an error unless `applied`.
async fn applied(
    client: &mut CommandClient,
    envelope: &Value,
    what: &str,
) -> Result<Value, BenchError> {
    let reply = client.send(envelope, REPLY_TIMEOUT).await?;
    if reply["status"] != "applied" {
        return Err(BenchError::new(format!("setup: {what} failed: {reply}")));
    }
    Ok(reply["data"].clone())
}

/// The `k`-th organization: onboarded, its manager activated, its users invited.
async fn onboard_one(
    client: &mut CommandClient,
    sink: &Sink,
    k: usize,
) -> Result<Organization, BenchError> {
    let id = workloads::organization_id(k);
    let manager_email = workloads::manager_email(k);
    sink.keep_body_for(&manager_email);
    let onboard = CommandClient::envelope("onboard_organization", workloads::onboard_data(k), None);
    let data = applied(client, &onboard, &format!("onboarding {id}")).await?;
    let manager = data["manager_id"]
        .as_str()
        .ok_or_else(|| BenchError::new(format!("setup: onboarding {id}: no manager_id: {data}")))?
        .to_owned();
    let token = activation_email_token(sink, &manager_email).await?;
    let activate = CommandClient::envelope("activate_user", json!({"token": token}), None);
    applied(client, &activate, &format!("activating {manager_email}")).await?;
    let mut users = Vec::with_capacity(USERS_PER_ORGANIZATION);
    for j in 0..USERS_PER_ORGANIZATION {
        let email = workloads::member_email(k, j);
        let data = workloads::invite_data(&id, &email, &format!("Member {j}"));
        let invite = CommandClient::envelope("invite_user", data, Some(&manager));
        let data = applied(client, &invite, &format!("inviting {email}")).await?;
        let user = data["user_id"].as_str().ok_or_else(|| {
            BenchError::new(format!("setup: inviting {email}: no user_id: {data}"))
        })?;
        users.push(Member {
            id: user.to_owned(),
            email,
        });
    }
    Ok(Organization {
        id,
        domain: workloads::organization_domain(k),
        manager,
        users,
    })
}

/// Waits (60 s at most) until the invitation of every organization's users has arrived.
async fn wait_for_invitations(
    sink: &Sink,
    organizations: &[Organization],
) -> Result<(), BenchError> {
    let mut waiting: HashSet<String> = organizations
        .iter()
        .flat_map(|o| o.users.iter().map(|m| m.email.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !waiting.is_empty() {
        for (to, _) in sink.take_arrivals() {
            waiting.remove(&to);
        }
        if Instant::now() > deadline {
            return Err(BenchError::new(format!(
                "setup: {} invitations had not arrived after 60 s",
                waiting.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
