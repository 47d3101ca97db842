//! The layer rule of `lib.rs`, checked over the sources: imports run from a
//! layer to the layers below it, never up and never round in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers of `lib.rs`, top first.
const LAYERS: &[&[&str]] = &[
    &["runtime", "state", "migrate"],
    &["http"],
    &["service"],
    &["store", "cache"],
    &["telemetry"],
    &[
        "user",
        "auth",
        "idempotency",
        "config",
        "error",
        "tls",
        "secrets",
        "hooks",
    ],
];

/// Every module of `src` (a file or a folder) and the modules it names as
/// `crate::<module>` in code (comments aside).
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("read src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" || name == "bin" || name == "layers" {
            continue;
        }
        let mut named = BTreeSet::new();
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).expect("read source");
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or_default();
                named.extend(crate_paths(code).filter(|module| *module != name));
            }
        }
        graph.insert(name, named);
    }
    graph
}

fn rust_files(path: &Path) -> Vec<std::path::PathBuf> {
    if path.is_dir() {
        std::fs::read_dir(path)
            .expect("read module folder")
            .flat_map(|entry| rust_files(&entry.expect("entry").path()))
            .collect()
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        vec![path.to_owned()]
    } else {
        Vec::new()
    }
}

/// The modules named after `crate::` in `code`, including `crate::{a, b::c}`.
fn crate_paths(code: &str) -> impl Iterator<Item = String> + '_ {
    code.match_indices("crate::").flat_map(|(at, prefix)| {
        let rest = &code[at + prefix.len()..];
        let first_names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        first_names
            .into_iter()
            .map(|path| {
                path.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|name| !name.is_empty())
            .collect::<Vec<_>>()
    })
}

/// What breaks the rule: modules in no layer, imports that go up, circles.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let layer = |module: &str| LAYERS.iter().position(|layer| layer.contains(&module));
    let mut found = Vec::new();
    for (module, named) in graph {
        let Some(own) = layer(module) else {
            found.push(format!("{module} is in no layer of lib.rs"));
            continue;
        };
        for other in named {
            match layer(other) {
                Some(theirs) if theirs < own => {
                    found.push(format!("{module} imports {other}, a higher layer"));
                }
                _ => {}
            }
        }
    }
    for start in graph.keys() {
        if let Some(circle) = circle_from(graph, start, &mut vec![start.clone()]) {
            // Each circle once, told from its first module by name.
            if circle.iter().all(|module| module >= start) {
                found.push(format!("import circle: {}", circle.join(" -> ")));
            }
        }
    }
    found
}

/// A path of imports from the last module of `path` back to its first.
fn circle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let last = path.last()?.clone();
    for next in graph.get(&last).into_iter().flatten() {
        if next == start {
            let mut circle = path.clone();
            circle.push(next.clone());
            return Some(circle);
        }
        if !path.contains(next) && graph.contains_key(next) {
            path.push(next.clone());
            if let Some(circle) = circle_from(graph, start, path) {
                return Some(circle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn imports_run_down_the_layers_without_circles() {
    // Arrange
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");

    // Act
    let graph = imports(&src);

    // Assert
    assert!(
        graph.contains_key("service") && graph["service"].contains("cache"),
        "{graph:?}"
    );
    let found = violations(&graph);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn an_import_going_up_or_round_is_reported() {
    // Arrange: the shape of the modules before the layers were drawn.
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("telemetry", &["service"][..]),
        ("service", &["cache", "telemetry"]),
        ("cache", &["telemetry"]),
        ("config", &["secrets"]),
        ("secrets", &["config"]),
        ("extra", &[]),
    ]
    .into_iter()
    .map(|(module, named)| {
        (
            module.to_owned(),
            named.iter().map(|name| (*name).to_owned()).collect(),
        )
    })
    .collect();

    // Act
    let found = violations(&graph);

    // Assert
    for expected in [
        "extra is in no layer of lib.rs",
        "telemetry imports service, a higher layer",
        "import circle: config -> secrets -> config",
        "import circle: cache -> telemetry -> service -> cache",
    ] {
        assert!(
            found.iter().any(|line| line == expected),
            "{expected}: {found:#?}"
        );
    }
}

#[test]
fn grouped_and_nested_crate_paths_are_read() {
    let named: Vec<String> =
        crate_paths("use crate::{cache::Lease, hooks}; let x = crate::telemetry::measure;")
            .collect();
    assert_eq!(named, ["cache", "hooks", "telemetry"]);
}
