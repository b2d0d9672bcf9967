//! The path table: every path the engine serves, with its fields, operations and help. The same
//! definitions route requests, validate them, answer `help`, and build the OpenAPI document, so
//! the documentation cannot drift from the behaviour.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::contract::error::Error;
use crate::contract::fields::FieldDef;
use crate::contract::request::{Operation, Request, Response};
use crate::mount::MountCore;

/// A path's handler for one operation. A plain function pointer, so a path's definition and
/// its handlers sit side by side in the module that serves it and nothing else names the path.
pub type Handler = for<'a> fn(Call<'a>) -> HandlerFuture<'a>;

/// What a handler returns: boxed, because handlers of different paths are different futures.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send + 'a>>;

/// One request to a matched path, as its handler sees it.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub core: &'a Arc<MountCore>,
    pub req: &'a Request,
    matched: &'a Matched<'a>,
}

impl<'a> Call<'a> {
    /// The value of path parameter `name` (`{name}` in the pattern).
    pub fn param(&self, name: &str) -> &'a str {
        self.matched.param(name)
    }
}

/// An operation a path serves, and the function that serves it.
#[derive(Clone, Copy)]
pub struct Op {
    pub operation: Operation,
    pub handler: Handler,
}

/// `operation` on a path, served by `handler`.
pub fn op(operation: Operation, handler: Handler) -> Op {
    Op { operation, handler }
}

#[derive(Clone)]
pub struct PathDef {
    /// Segments separated by `/`; `{name}` is a parameter that matches one segment. A pattern
    /// ending in `/` is a listing and matches only that exact path.
    pub pattern: &'static str,
    pub fields: Vec<FieldDef>,
    pub operations: Vec<Op>,
    /// Whether a read or a list of this path acts: issues, asks a target, or must not be served
    /// from a standby's copy of storage. Writes always act.
    pub reads_act: bool,
    pub synopsis: &'static str,
    pub description: &'static str,
}

impl std::fmt::Debug for PathDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathDef")
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

impl PathDef {
    /// The handler of `op` (normalized) on this path, if the path serves it.
    pub fn handler(&self, op: Operation) -> Option<Handler> {
        self.operations
            .iter()
            .find(|o| o.operation == op)
            .map(|o| o.handler)
    }

    /// Whether `op` on this path may change anything or reach a target. Such a request runs
    /// only on the active node; the rest are served from any node's copy of storage.
    pub fn acts(&self, op: Operation) -> bool {
        match op {
            Operation::Read | Operation::List => self.reads_act,
            _ => true,
        }
    }

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
        let ops: Vec<&str> = self.operations.iter().map(|o| o.operation.name()).collect();
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

impl<'m> Matched<'m> {
    /// The value of path parameter `name`; empty if the pattern has none of that name.
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    /// The call a handler receives for this match.
    pub fn call<'a>(&'a self, core: &'a Arc<MountCore>, req: &'a Request) -> Call<'a>
    where
        'm: 'a,
    {
        Call {
            core,
            req,
            matched: self,
        }
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
        let def = |pattern| PathDef {
            pattern,
            fields: vec![],
            operations: vec![op(Operation::Read, |_| {
                Box::pin(async { Ok(Response::empty()) })
            })],
            reads_act: false,
            synopsis: "",
            description: "",
        };
        Router {
            paths: vec![def("config/"), def("config/{name}")],
        }
    }

    #[test]
    fn matches_patterns_and_extracts_params() {
        let r = router();
        let m = r.find("config/main-db").unwrap();
        assert_eq!(m.def.pattern, "config/{name}");
        assert_eq!(m.param("name"), "main-db");
        assert_eq!(r.find("config/").unwrap().def.pattern, "config/");
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
