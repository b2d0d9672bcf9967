//! `inventory/NAME`: every principal on a connection's target, each classed by who manages
//! it, with what the target says of its power. What it is for: finding the standing accounts
//! (`unmanaged`) that no engine rotates or revokes, and the powerful ones among them, so they can
//! be brought under a static role or replaced by dynamic credentials.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use crate::contract::backend::Standing;
use crate::contract::error::Error;
use crate::contract::request::{Operation, Request, Response};
use crate::contract::template;
use crate::model::audit::{self, Action, Event};
use crate::model::static_role;
use crate::mount::MountCore;
use crate::paths::operator::{listings, live_credentials};
use crate::paths::router::{PathDef, op};

/// Who manages a principal, in the order a principal is classed: the first that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The account the connection logs in as: mayfly's own admin on the target.
    Connection,
    /// An account a static role of this mount rotates.
    Static,
    /// A credential in this mount's ledger, not yet revoked.
    Dynamic,
    /// This mount's mark, and no live record: a leftover `orphans/NAME` can purge.
    Orphan,
    /// Another mount's or cluster's mark (or the bare `mf-` of older versions): theirs to
    /// manage, never this mount's.
    OtherMount,
    /// Nothing manages it: a standing account.
    Unmanaged,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Connection => "connection",
            Class::Static => "static",
            Class::Dynamic => "dynamic",
            Class::Orphan => "orphan",
            Class::OtherMount => "other_mount",
            Class::Unmanaged => "unmanaged",
        }
    }

    const ALL: [Class; 6] = [
        Class::Connection,
        Class::Static,
        Class::Dynamic,
        Class::Orphan,
        Class::OtherMount,
        Class::Unmanaged,
    ];
}

/// What the mount knows of one connection's principals.
#[derive(Default)]
struct Managed {
    mark: String,
    /// Static role names by the account they rotate.
    statics: HashMap<String, Vec<String>>,
    /// Live credential ids by principal name.
    dynamic: HashMap<String, Vec<String>>,
}

impl Managed {
    fn class_of(&self, s: &Standing) -> Class {
        if s.own {
            Class::Connection
        } else if self.statics.contains_key(&s.name) {
            Class::Static
        } else if self.dynamic.contains_key(&s.name) {
            Class::Dynamic
        } else if s.name.starts_with(&self.mark) && self.mark != template::LEGACY_MARK {
            Class::Orphan
        } else if template::has_other_mark(&s.name, &self.mark) {
            Class::OtherMount
        } else {
            Class::Unmanaged
        }
    }
}

async fn managed(core: &MountCore, name: &str) -> Result<Managed, Error> {
    let kv = core.storage.as_ref();
    let mut statics: HashMap<String, Vec<String>> = HashMap::new();
    for role_name in static_role::list(kv).await? {
        if let Some(role) = static_role::load(kv, &role_name).await?
            && role.db_name == name
        {
            statics.entry(role.username).or_default().push(role_name);
        }
    }
    let ledger = live_credentials(core).await?;
    let mut dynamic: HashMap<String, Vec<String>> = HashMap::new();
    for c in ledger.records.into_iter().filter(|c| c.connection == name) {
        dynamic.entry(c.principal).or_default().push(c.id);
    }
    // A record this mayfly cannot read may hold a live principal: it counts as dynamic where
    // it says which, so such a principal is never shown as a standing account.
    for u in ledger.unreadable {
        if u.connection.as_deref().is_none_or(|c| c == name)
            && let Some(p) = u.principal
        {
            dynamic.entry(p).or_default().push(u.id);
        }
    }
    Ok(Managed {
        mark: core.mark.clone(),
        statics,
        dynamic,
    })
}

/// `inventory/NAME`.
async fn inventory(core: &MountCore, name: &str, req: &Request) -> Result<Response, Error> {
    let Some(config) = core.connection(name).await? else {
        return Err(Error::bad_request(format!("no connection '{name}'")));
    };
    let target = core.target(name).await?;
    // The target first, then the ledger: a credential issued meanwhile already has its intent
    // on record when it appears on the target, so it is never shown as a standing account.
    let mut found: BTreeMap<String, Standing> = BTreeMap::new();
    // Kinds that list by role list once per role; a role that cannot list (an http role
    // without a list call) is passed over while another one can.
    let mut listed = false;
    let mut cannot = None;
    for settings in listings(core, name).await? {
        match target.inventory(&settings).await {
            Ok(all) => {
                listed = true;
                for s in all {
                    found.entry(s.name.clone()).or_insert(s);
                }
            }
            Err(e @ Error::BadRequest(_)) => cannot = Some(e),
            Err(e) => return Err(e),
        }
    }
    if !listed {
        return Err(cannot.unwrap_or_else(|| {
            Error::bad_request(format!(
                "no role of connection '{name}' says how to list the principals on its target \
                 (a list call)"
            ))
        }));
    }
    let managed = managed(core, name).await?;

    let mut counts: BTreeMap<&str, usize> = Class::ALL.iter().map(|c| (c.name(), 0)).collect();
    let mut principals = Vec::with_capacity(found.len());
    for s in found.into_values() {
        let class = managed.class_of(&s);
        *counts.entry(class.name()).or_default() += 1;
        let mut entry = Map::new();
        entry.insert("name".into(), json!(s.name));
        entry.insert("class".into(), json!(class.name()));
        entry.insert("power".into(), Value::Object(s.power));
        match class {
            Class::Static => {
                entry.insert("static_roles".into(), json!(managed.statics[&s.name]));
            }
            Class::Dynamic => {
                entry.insert("credentials".into(), json!(managed.dynamic[&s.name]));
            }
            _ => {}
        }
        principals.push(Value::Object(entry));
    }
    let detail = format!(
        "inventory/{name}: {}",
        counts
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    audit::emit(
        Action::Inventory,
        "ok",
        &Event::by(&req.requester).detail(&detail),
    );
    let mut data = Map::new();
    data.insert("connection".into(), json!(name));
    data.insert("plugin_name".into(), json!(config.plugin_name));
    data.insert("mark".into(), json!(managed.mark));
    data.insert("counts".into(), json!(counts));
    data.insert("principals".into(), Value::Array(principals));
    Ok(Response::data(data))
}

/// The paths this module serves, for the engine's table.
pub(crate) fn paths() -> Vec<PathDef> {
    vec![PathDef {
        pattern: "inventory/{name}",
        fields: vec![],
        operations: vec![op(Operation::Read, |c| {
            Box::pin(inventory(c.core, c.param("name"), c.req))
        })],
        reads_act: true,
        synopsis: "Every principal on a connection's target, classed by who manages it, with \
            what the target says of its power (sudo).",
        description: "Classes: connection (the account the connection logs in as), static (a \
            static role rotates it), dynamic (a live credential of this mount), orphan (this \
            mount's mark, no live credential), other_mount (another mount's or cluster's \
            mark, or the bare mf- of older versions) and unmanaged (a standing account nothing \
            rotates). Power: PostgreSQL login roles' superuser, create_role, create_db, \
            replication, bypass_rls, role memberships and table grants; MySQL accounts' host, \
            super, create_user, grant_option and database and table grants; Redis ACL rules \
            (without password hashes); RabbitMQ tags; IAM users' access keys and their ages. \
            HTTP connections are listed where their roles declare a list call.",
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(name: &str, own: bool) -> Standing {
        Standing {
            name: name.into(),
            own,
            power: Map::new(),
        }
    }

    #[test]
    fn each_principal_is_classed_by_the_first_that_manages_it() {
        let mark = template::mark_of("3fa2c1d4");
        let managed = Managed {
            mark: mark.clone(),
            statics: HashMap::from([("app_owner".to_owned(), vec!["owner".to_owned()])]),
            dynamic: HashMap::from([
                (format!("{mark}app-1"), vec!["c1".to_owned()]),
                // A static role's account that also has a record stays static.
                ("app_owner".to_owned(), vec!["c2".to_owned()]),
            ]),
        };
        let class = |name: &str, own: bool| managed.class_of(&standing(name, own));
        assert_eq!(class("admin", true), Class::Connection);
        assert_eq!(class("app_owner", false), Class::Static);
        assert_eq!(class(&format!("{mark}app-1"), false), Class::Dynamic);
        assert_eq!(class(&format!("{mark}app-2"), false), Class::Orphan);
        assert_eq!(class("mf-77aa00-app-3", false), Class::OtherMount);
        assert_eq!(class("mf-app-4", false), Class::OtherMount);
        assert_eq!(class("reporting", false), Class::Unmanaged);
    }

    #[test]
    fn without_a_mount_mark_nothing_unrecorded_is_called_an_orphan() {
        let managed = Managed {
            mark: template::LEGACY_MARK.to_owned(),
            ..Managed::default()
        };
        assert_eq!(
            managed.class_of(&standing("mf-app-1", false)),
            Class::Unmanaged
        );
    }
}
