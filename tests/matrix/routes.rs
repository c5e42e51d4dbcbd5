//! The route tables the matrix is generated from: every `.route(path, method(handler)...)`
//! of the OpenStack API's and the web console's routers, read from their source.

use std::path::{Path, PathBuf};

/// One route and method, as the router declares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub method: String,
    pub path: String,
}

/// Reads every `.route(...)` of the OpenStack API's routers.
pub fn routes() -> Vec<Route> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api/openstack");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("network")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(routes_in(&f));
    }
    assert!(out.len() > 80, "only {} routes found: {out:?}", out.len());
    out
}

/// Reads every `.route(...)` of the web console's routers.
pub fn console_routes() -> Vec<Route> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/console");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let out: Vec<Route> = files.iter().flat_map(|f| routes_in(f)).collect();
    assert!(out.len() > 40, "only {} console routes: {out:?}", out.len());
    out
}

pub fn routes_in(file: &Path) -> Vec<Route> {
    let s = std::fs::read_to_string(file).unwrap();
    // The file's path helper: `let p = |s: &str| format!("PREFIX{s}");`
    let prefix = s.find("let p = |s: &str| format!(\"").map(|i| {
        let rest = &s[i + "let p = |s: &str| format!(\"".len()..];
        rest[..rest.find("{s}").unwrap()]
            .replace("{{", "{")
            .replace("}}", "}")
    });
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = s[at..].find(".route(") {
        let start = at + i + ".route(".len();
        let mut depth = 1;
        let mut end = start;
        for (k, ch) in s[start..].char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = start + k;
                break;
            }
        }
        let call = s[start..end].trim();
        at = end;
        let (path, handlers) = if let Some(rest) = call.strip_prefix("&p(\"") {
            let q = rest.find('"').unwrap();
            let prefix = prefix
                .clone()
                .unwrap_or_else(|| panic!("{}: p() without a prefix", file.display()));
            (format!("{prefix}{}", &rest[..q]), &rest[q..])
        } else if let Some(rest) = call.strip_prefix('"') {
            let q = rest.find('"').unwrap();
            (rest[..q].to_string(), &rest[q..])
        } else {
            panic!("{}: a route this test cannot read: {call}", file.display());
        };
        for m in ["get", "head", "post", "put", "patch", "delete", "any"] {
            let plain = handlers.contains(&format!(", {m}("))
                || handlers.contains(&format!(",\n{m}("))
                || handlers.contains(&format!(".{m}("));
            let first = handlers
                .trim_start_matches('"')
                .trim_start_matches(',')
                .trim_start()
                .starts_with(&format!("{m}("));
            if plain || first {
                out.push(Route {
                    method: m.to_uppercase(),
                    path: path.clone(),
                });
            }
        }
    }
    out
}
