//! The API reference (`GET /api/openapi.json`) describes every route of the CRM: a route added
//! to `src/http/` without being described fails here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use serde_json::Value;

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

/// The reference as the server serves it.
async fn served_document() -> Value {
    let app = spawn_app();
    let resp = app.http.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

/// `(METHOD, path)` for every operation of the document, with parameters written `{param}`.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.to_uppercase(), normalise(path)));
            }
        }
    }
    out
}

fn normalise(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{param}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A route found in the source: its method (if a method filter follows it) and its path;
/// `prefix` when the path ends in `..` (the route matches everything below it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SourceRoute {
    method: Option<String>,
    path: String,
    prefix: bool,
}

/// Finds every `warp::path!(...)` (or `path!(...)`) invocation and the first method filter
/// (`warp::get()`, `warp::post()`, ...) after it and before the next one. Whitespace, line
/// breaks and comment lines do not matter.
fn scan(source: &str) -> Vec<SourceRoute> {
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
        .collect();
    let starts = macro_starts(&code);
    let mut routes = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let open = start + "path!(".len();
        let close = matching_paren(&code, open).expect("an unbalanced path!( invocation");
        let mut prefix = false;
        let mut segments = Vec::new();
        for seg in code[open..close].split('/') {
            if seg == ".." {
                prefix = true;
            } else if let Some(lit) = seg.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                segments.push(lit.to_string());
            } else {
                segments.push("{param}".to_string());
            }
        }
        let window_end = starts.get(n + 1).copied().unwrap_or(code.len());
        let window = &code[close..window_end];
        // `get_or_head()` (src/http/mod.rs) is GET as the document describes it; HEAD is the
        // same answer without its body.
        let method = METHODS
            .iter()
            .filter_map(|m| window.find(&format!("::{m}()")).map(|at| (at, m.to_uppercase())))
            .chain(window.find("get_or_head()").map(|at| (at, "GET".to_string())))
            .min()
            .map(|(_, m)| m);
        routes.push(SourceRoute {
            method,
            path: format!("/{}", segments.join("/")),
            prefix,
        });
    }
    routes
}

/// Byte offsets of `path!(` not preceded by an identifier character (so `warp::path!(` and a
/// bare `path!(` count, `my_path!(` does not).
fn macro_starts(code: &str) -> Vec<usize> {
    code.match_indices("path!(")
        .map(|(i, _)| i)
        .filter(|&i| {
            code[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .collect()
}

fn matching_paren(code: &str, open: usize) -> Option<usize> {
    let mut depth = 1;
    let mut in_string = false;
    let mut prev = ' ';
    for (i, c) in code[open..].char_indices() {
        match c {
            '"' if prev != '\\' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
        prev = c;
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every route defined under `src/http/`, with the file it is in.
fn source_routes() -> Vec<(String, SourceRoute)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/http"), &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root).unwrap().display().to_string();
        out.extend(scan(&text).into_iter().map(|r| (name.clone(), r)));
    }
    out
}

#[test]
fn the_route_scanner_reads_routes_however_they_are_formatted() {
    let source = r#"
        // Built like warp::path!("commented" / "out").and(warp::delete()): not a route.
        let a = warp::path!("api" / "clients" / String / "notes").and(warp::get()).and(auth);
        let b = warp::path!(
            "api"
                / "clients"
                / Uuid
                / "notes"
        )
        .and(with_state(state.clone()))
        .and(
            warp::post(),
        );
        let c = path!("api" / "audit.csv").and(warp::filters::method::get());
        let d = warp::path!("healthz").map(|| "no method filter");
        let e = warp::path!("assets" / ..).and(warp::get());
        let f = my_path!("not" / "warp");
    "#;
    let route = |method: Option<&str>, path: &str, prefix: bool| SourceRoute {
        method: method.map(str::to_string),
        path: path.into(),
        prefix,
    };
    assert_eq!(
        scan(source),
        [
            route(Some("GET"), "/api/clients/{param}/notes", false),
            route(Some("POST"), "/api/clients/{param}/notes", false),
            route(Some("GET"), "/api/audit.csv", false),
            route(None, "/healthz", false),
            route(Some("GET"), "/assets", true),
        ]
    );
}

#[tokio::test]
async fn every_route_in_the_source_is_described_with_exactly_its_methods() {
    let doc = served_document().await;
    let described = documented(&doc);
    let routes = source_routes();
    assert!(
        routes.iter().any(|(_, r)| r.path == "/api/service/clients/{param}"),
        "the scanner found the service routes: {routes:?}"
    );

    let mut problems = Vec::new();
    let mut built: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, route) in &routes {
        let Some(method) = &route.method else {
            problems.push(format!(
                "{file}: {} has no method filter after its path (write .and(warp::get()) etc.)",
                route.path
            ));
            continue;
        };
        if route.prefix {
            let covered = described
                .iter()
                .any(|(m, p)| m == method && p.starts_with(&format!("{}/", route.path)));
            if !covered {
                problems.push(format!("{file}: {method} {}/.. is not described", route.path));
            }
            continue;
        }
        if !described.contains(&(method.clone(), route.path.clone())) {
            problems.push(format!(
                "{file}: {method} {} is not described in openapi.json",
                route.path
            ));
        }
        built.entry(route.path.clone()).or_default().insert(method.clone());
    }
    // For a path that exists, the document lists exactly the methods it answers.
    for (path, methods) in &built {
        let in_doc: BTreeSet<String> = described
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .collect();
        for extra in in_doc.difference(methods) {
            problems.push(format!(
                "openapi.json describes {extra} {path}, which the source does not answer"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    let pending: Vec<String> = described
        .iter()
        .filter(|(_, p)| !built.contains_key(p))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    if !pending.is_empty() {
        eprintln!("described but not built in this tree yet:\n  {}", pending.join("\n  "));
    }
}

#[tokio::test]
async fn the_reference_describes_the_whole_contract() {
    let doc = served_document().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let described = documented(&doc);
    let contract = [
        "POST /api/webhooks/site",
        "GET /api/service/clients/{email}",
        "GET /api/service/accounts/{clientEmail}",
        "PATCH /api/service/clients/{email}/kyc",
        "POST /api/service/clients/{email}/notes",
        "GET /api/service/clients/{email}/activity",
        "POST /api/auth/login",
        "GET /api/auth/me",
        "POST /api/auth/password",
        "GET /api/clients",
        "GET /api/clients/{id}",
        "GET /api/clients/{id}/notes",
        "POST /api/clients/{id}/notes",
        "GET /api/clients/{id}/activity",
        "PATCH /api/clients/{id}/kyc",
        "POST /api/clients/{id}/impersonate",
        "POST /api/clients/{id}/subaccounts",
        "GET /api/accounts/{id}",
        "GET /api/accounts/{id}/ledger",
        "POST /api/accounts/{id}/adjust-balance",
        "PATCH /api/accounts/{id}/leverage",
        "GET /api/audit",
        "GET /api/audit.csv",
        "GET /api/webhooks",
        "GET /api/webhooks/{id}",
        "POST /api/webhooks/{id}/reprocess",
        "GET /api/staff",
        "POST /api/staff",
        "PATCH /api/staff/{id}",
        "POST /api/staff/{id}/reset-password",
        "GET /healthz",
        "GET /metrics",
        "GET /api/openapi.json",
    ];
    for op in contract {
        let (method, path) = op.split_once(' ').unwrap();
        assert!(
            described.contains(&(method.to_string(), normalise(path))),
            "{op} is not described"
        );
    }
}

#[tokio::test]
async fn every_operation_is_complete_and_every_reference_resolves() {
    let doc = served_document().await;
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no operationId"));
            assert!(ids.insert(id.to_string()), "{name}: operationId {id} is used twice");
            assert!(op["summary"].is_string(), "{name}: no summary");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{name}: no success response"
            );
            // Path parameters are declared, by reference or inline.
            for param in path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
                let declared = op["parameters"].as_array().into_iter().flatten().any(|p| {
                    let p = resolve(&doc, p);
                    p["in"] == "path" && p["name"] == param
                });
                assert!(declared, "{name}: path parameter {param} is not declared");
            }
            if path.starts_with("/api/service/") {
                assert_eq!(op["security"], serde_json::json!([{ "serviceToken": [] }]), "{name}");
                assert!(responses.contains_key("429"), "{name}: the rate limit answer");
                assert!(responses.contains_key("401"), "{name}: the missing-token answer");
            }
        }
    }
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: only local references"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or(&Value::Null),
        None => v,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(s)) => out.push(s.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
