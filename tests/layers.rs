//! The core's layers, as src/lib.rs describes them ("Layout"): six folders, each importing only
//! from the folders before it, with no circle among the modules inside a folder either. These
//! tests read the source, so a change that breaks the layering fails here with the line that
//! does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: [&str; 6] = ["contract", "model", "mount", "jobs", "paths", "engine"];
/// What may sit at src/'s top level besides the layers: the crate root and what only tests use.
const OUTSIDE_LAYERS: [&str; 4] = ["lib.rs", "fuzz.rs", "testkit.rs", "scenarios"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its unit tests and comments, as (line number, line).
fn code(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

/// The `crate::a::b` paths a line names, as (a, b); `b` is empty when the path stops at `a`.
fn crate_paths(line: &str) -> Vec<(String, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    line.match_indices("crate::")
        .map(|(i, m)| {
            let rest = &line[i + m.len()..];
            let first = ident(rest);
            let second = rest[first.len()..]
                .strip_prefix("::")
                .map(ident)
                .unwrap_or_default();
            (first, second)
        })
        .collect()
}

/// The layer and module a file belongs to: `src/model/ledger.rs` is (model, ledger),
/// `src/jobs/revocation/on_target.rs` is (jobs, revocation), `src/mount/mod.rs` is (mount, "").
fn place(path: &Path) -> (String, String) {
    let rel = path.strip_prefix(src()).unwrap();
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    let module = match parts.get(1).map(String::as_str) {
        None | Some("mod") => String::new(),
        Some(m) => m.to_owned(),
    };
    (parts[0].clone(), module)
}

#[test]
fn the_top_level_of_the_core_is_its_six_layers() {
    let mut strays = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let known = if path.is_dir() {
            LAYERS.contains(&name.as_str()) || OUTSIDE_LAYERS.contains(&name.as_str())
        } else {
            OUTSIDE_LAYERS.contains(&name.as_str()) || !name.ends_with(".rs")
        };
        if !known {
            strays.push(name);
        }
    }
    assert!(
        strays.is_empty(),
        "src/ holds {strays:?}: a module belongs in one of the layers {LAYERS:?}"
    );
}

#[test]
fn each_layer_imports_only_from_the_layers_before_it() {
    let mut wrong = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src().join(layer), &mut files);
        for file in files {
            for (n, line) in code(&file) {
                for (to, _) in crate_paths(&line) {
                    if LAYERS
                        .iter()
                        .position(|l| *l == to)
                        .is_some_and(|r| r > rank)
                    {
                        wrong.push(format!("{}:{n}: {}", file.display(), line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a layer reaches one above it:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_circle_among_the_modules_of_a_layer() {
    let mut files = Vec::new();
    for layer in LAYERS {
        rust_files(&src().join(layer), &mut files);
    }
    // layer::module -> the modules of the same layer it names.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let (layer, module) = place(file);
        if module.is_empty() {
            continue;
        }
        let from = format!("{layer}::{module}");
        let targets = edges.entry(from.clone()).or_default();
        for (_, line) in code(file) {
            for (to_layer, to_module) in crate_paths(&line) {
                if to_layer == layer && !to_module.is_empty() && to_module != module {
                    targets.insert(format!("{layer}::{to_module}"));
                }
            }
        }
    }
    // Depth-first search; a node met again while still on the path closes a circle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("modules that import each other: {}", circle.join(" -> "));
        }
    }
}
