//! The API contract as written in `openapi.yaml`, for tests: which statuses
//! each operation documents. The function wrappers check every response a test
//! sees against it, so a status the handlers answer with but the document does
//! not list fails whichever test provokes it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn repository_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
}

/// `openapi.yaml` as JSON values.
pub fn openapi() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let text = std::fs::read_to_string(repository_file("openapi.yaml")).expect("openapi.yaml");
        serde_yaml_ng::from_str(&text).expect("openapi.yaml is valid YAML")
    })
}

/// The statuses `openapi.yaml` documents for `method path`.
pub fn documented_statuses(method: &str, path: &str) -> BTreeSet<u16> {
    let responses = &openapi()["paths"][path][method.to_ascii_lowercase()]["responses"];
    responses
        .as_object()
        .unwrap_or_else(|| panic!("openapi.yaml documents no {method} {path}"))
        .keys()
        .map(|status| status.parse().expect("numeric status"))
        .collect()
}

/// Panics unless `status` is documented for the function's route.
pub fn assert_documented(route: &users_api::http::Route, status: u16) {
    let documented = documented_statuses(route.method, route.path);
    assert!(
        documented.contains(&status),
        "{} {} answered {status}, which openapi.yaml does not document ({documented:?})",
        route.method,
        route.path
    );
}
