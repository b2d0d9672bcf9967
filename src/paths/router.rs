//! The path table: every path the engine serves, with its fields, operations and help. The same
//! definitions route requests, validate them, answer `help`, and build the OpenAPI document, so
//! the documentation cannot drift from the behaviour.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::contract::error::Error;
use crate::contract::fields::FieldDef;
use crate::contract::request::Operation;

/// What a matched path leads to; the engine dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ConfigList,
    Config,
    RoleList,
    Role,
    Creds,
    LeaseList,
    Lease,
    TaskConfig,
    TaskCreate,
    TaskList,
    Task,
    RevokeTaskList,
    RevokeTask,
    RevokeRole,
    RevokeConfig,
    RevokeAll,
    Revocations,
    Orphans,
    RotateRoot,
    Reset,
    StaticRoleList,
    StaticRole,
    StaticCreds,
    RotateRole,
    PolicyList,
    Policy,
    PolicySchema,
    PolicySimulate,
}

impl Route {
    /// Whether `op` on this route may change anything or reach a target. Such a request runs
    /// only on the active node; the rest are served from any node's copy of storage.
    /// Reading `creds/` issues, `orphans/` asks the target, and `static-creds/` must not
    /// serve a standby's copy, which can hold the password from before the last rotation.
    pub fn acts(self, op: Operation) -> bool {
        match op {
            Operation::Read | Operation::List => {
                matches!(self, Route::Creds | Route::Orphans | Route::StaticCreds)
            }
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PathDef {
    /// Segments separated by `/`; `{name}` is a parameter that matches one segment. A pattern
    /// ending in `/` is a listing and matches only that exact path.
    pub pattern: &'static str,
    pub route: Route,
    pub fields: Vec<FieldDef>,
    pub operations: Vec<Operation>,
    pub synopsis: &'static str,
    pub description: &'static str,
}

impl PathDef {
    /// The parameters in the pattern, in order.
    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.pattern
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// Plain-text help for `bao path-help`.
    pub fn help(&self) -> String {
        let mut out = format!(
            "Request:        {}\n\n## DESCRIPTION\n\n{}\n\n",
            self.pattern, self.synopsis
        );
        if !self.description.is_empty() {
            let _ = writeln!(out, "{}\n", self.description.trim());
        }
        let ops: Vec<&str> = self.operations.iter().map(|o| o.name()).collect();
        let _ = writeln!(out, "## OPERATIONS\n\n{}\n", ops.join(", "));
        let params: Vec<&str> = self.params().collect();
        if !params.is_empty() || !self.fields.is_empty() {
            out.push_str("## PARAMETERS\n\n");
            for p in params {
                let _ = writeln!(out, "    {p} (path segment)\n        {}\n", NAME_RULE);
            }
            for f in &self.fields {
                let mut flags = vec![f.ty.openapi_type()];
                if f.required {
                    flags.push("required");
                }
                if f.secret {
                    flags.push("write-only");
                }
                let _ = writeln!(
                    out,
                    "    {} ({})\n        {}\n",
                    f.name,
                    flags.join(", "),
                    f.description
                );
            }
        }
        out
    }
}

/// What names in paths may be: they become storage keys and, later, parts of principal names.
pub const NAME_RULE: &str =
    "1 to 128 characters: letters, digits, '-', '_' and '.', starting with a letter or digit";

pub fn validate_name(param: &str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "path segment '{param}': expected {NAME_RULE}"
        )))
    }
}

/// A request path matched against the table.
#[derive(Debug)]
pub struct Matched<'a> {
    pub def: &'a PathDef,
    pub params: BTreeMap<&'static str, String>,
}

impl Matched<'_> {
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    pub paths: Vec<PathDef>,
}

impl Router {
    /// Finds the path definition for `path`. A path that matches no pattern is `UnsupportedPath`;
    /// one whose parameter breaks the naming rule is a 400 that says so.
    pub fn find(&self, path: &str) -> Result<Matched<'_>, Error> {
        let segments: Vec<&str> = path.split('/').collect();
        for def in &self.paths {
            let pattern: Vec<&str> = def.pattern.split('/').collect();
            if pattern.len() != segments.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let mut matched = true;
            for (p, s) in pattern.iter().zip(&segments) {
                match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) if !s.is_empty() => {
                        params.insert(name, (*s).to_owned());
                    }
                    Some(_) => matched = false,
                    None if p == s => {}
                    None => matched = false,
                }
            }
            if matched {
                for (name, value) in &params {
                    validate_name(name, value)?;
                }
                return Ok(Matched { def, params });
            }
        }
        Err(Error::UnsupportedPath)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let def = |pattern, route| PathDef {
            pattern,
            route,
            fields: vec![],
            operations: vec![Operation::Read],
            synopsis: "",
            description: "",
        };
        Router {
            paths: vec![
                def("config/", Route::ConfigList),
                def("config/{name}", Route::Config),
            ],
        }
    }

    #[test]
    fn matches_patterns_and_extracts_params() {
        let r = router();
        let m = r.find("config/main-db").unwrap();
        assert_eq!(m.def.route, Route::Config);
        assert_eq!(m.param("name"), "main-db");
        assert_eq!(r.find("config/").unwrap().def.route, Route::ConfigList);
        assert_eq!(r.find("config").unwrap_err(), Error::UnsupportedPath);
        assert_eq!(r.find("config/a/b").unwrap_err(), Error::UnsupportedPath);
        assert_eq!(r.find("nothing").unwrap_err(), Error::UnsupportedPath);
    }

    #[test]
    fn refuses_names_that_break_the_rule() {
        let r = router();
        for bad in ["-x", "a b", "a'b", "x;drop", &"a".repeat(129)] {
            let e = r.find(&format!("config/{bad}")).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
            assert!(e.to_string().contains("path segment 'name'"), "{e}");
        }
    }
}
