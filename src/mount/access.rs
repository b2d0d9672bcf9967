//! Who may draw credentials of a role: its identity bindings, and a task it may draw them
//! under. Asked by issuance (`creds/ROLE`) and by an approval request, which must not be
//! asked by whoever could not issue.

use crate::contract::error::Error;
use crate::contract::request::Requester;
use crate::model::cidr::Cidr;
use crate::model::role::Role;
use crate::model::task::{self, Task};
use crate::mount::MountCore;

/// The task `id`, if credentials of `role` may be drawn under it by `who` now.
pub async fn usable_task(
    core: &MountCore,
    id: &str,
    role_name: &str,
    role: &Role,
    who: &Requester,
    now: u64,
) -> Result<Task, Error> {
    let task = task::load(core.storage.as_ref(), id)
        .await?
        .ok_or_else(|| Error::bad_request(format!("field 'task_id': no task '{id}'")))?;
    if !task.is_open(now) {
        return Err(Error::bad_request(format!(
            "field 'task_id': task '{id}' has ended ({}); start a new task",
            task.end_reason.as_deref().unwrap_or("deadline reached")
        )));
    }
    if task.bound_to_owner && !role.allow_other_task_owners && !task.owned_by(who) {
        return Err(Error::PermissionDenied(format!(
            "task '{id}' is bound to its owner (entity '{}'); this request comes from entity \
             '{}', and role '{role_name}' does not set allow_other_task_owners",
            task.owner.entity_id, who.entity_id
        )));
    }
    Ok(task)
}

/// The role's identity bindings: entity ids, group names and source networks. A refusal is a
/// 403 that names the binding.
pub async fn check_bindings(
    core: &MountCore,
    role_name: &str,
    role: &Role,
    who: &Requester,
) -> Result<(), Error> {
    if !role.bound_entity_ids.is_empty() && !role.bound_entity_ids.contains(&who.entity_id) {
        return Err(Error::PermissionDenied(format!(
            "role '{role_name}' is bound to entities (bound_entity_ids); this request's entity \
             '{}' is not one of them",
            who.entity_id
        )));
    }
    if !role.bound_cidrs.is_empty() {
        let addr: Option<std::net::IpAddr> = who.remote_addr.parse().ok();
        let inside = addr.is_some_and(|a| {
            role.bound_cidrs
                .iter()
                .filter_map(|c| Cidr::parse(c).ok())
                .any(|c| c.contains(a))
        });
        if !inside {
            return Err(Error::PermissionDenied(format!(
                "role '{role_name}' is bound to networks (bound_cidrs); this request's remote \
                 address '{}' is outside them",
                who.remote_addr
            )));
        }
    }
    if !role.bound_group_names.is_empty()
        && !in_any_group(core, &who.entity_id, &role.bound_group_names).await?
    {
        return Err(Error::PermissionDenied(format!(
            "role '{role_name}' is bound to groups (bound_group_names); this request's \
             entity '{}' is in none of them",
            who.entity_id
        )));
    }
    Ok(())
}

/// Whether entity `entity_id` is a member of one of `groups`, directly or through a parent
/// group, as the host says. A token without an entity is in none.
pub async fn in_any_group(
    core: &MountCore,
    entity_id: &str,
    groups: &[String],
) -> Result<bool, Error> {
    if entity_id.is_empty() || groups.is_empty() {
        return Ok(false);
    }
    Ok(core
        .identity(entity_id)
        .await?
        .group_names()
        .any(|g| groups.iter().any(|b| b == g)))
}
