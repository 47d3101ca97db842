//! One contract: the routes and statuses of `openapi.yaml` are those the
//! functions declare (and, through the function wrappers, those they answer
//! with), those `template.yaml` deploys and those the local router serves.
//! The one function without a route, `invalidate-cache`, is started by a
//! schedule and by nothing else.

use std::collections::BTreeSet;
use test_support::contract::{documented_statuses, openapi, repository_file};
use test_support::functions::ROUTES;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
/// The binary of the function no route reaches (docs/deploy.md, "The cache
/// consumer").
const CONSUMER: &str = "invalidate-cache";

/// (method, path, x-lambda-function) of every operation in the document.
fn documented_operations() -> BTreeSet<(String, String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in openapi()["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                let function = operation["x-lambda-function"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                operations.insert((method.to_ascii_uppercase(), path.clone(), function));
            }
        }
    }
    operations
}

fn declared_operations() -> BTreeSet<(String, String, String)> {
    for route in ROUTES {
        assert_eq!(
            route.name,
            format!("{} {}", route.method, route.path),
            "{}",
            route.function
        );
    }
    ROUTES
        .iter()
        .map(|route| {
            (
                route.method.to_owned(),
                route.path.to_owned(),
                route.function.to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes_the_functions_serve() {
    // Arrange and act
    let documented = documented_operations();
    let declared = declared_operations();

    // Assert
    assert_eq!(documented, declared);
}

#[test]
fn each_route_documents_exactly_the_statuses_its_function_answers_with() {
    for route in ROUTES {
        // Arrange
        let declared: BTreeSet<u16> = route.statuses.iter().copied().collect();

        // Act
        let documented = documented_statuses(route.method, route.path);

        // Assert
        assert_eq!(documented, declared, "{} {}", route.method, route.path);
    }
}

#[test]
fn every_operation_needs_the_jwt_authorizer_with_the_scope_its_function_checks() {
    // Arrange
    let document = openapi();
    let scheme = &document["components"]["securitySchemes"]["UsersAuthorizer"];

    for route in ROUTES {
        // Act
        let operation = &document["paths"][route.path][route.method.to_ascii_lowercase()];

        // Assert: nothing left open, and the gateway asks for the scope the
        // function checks itself.
        assert_eq!(
            operation["security"],
            serde_json::json!([{"UsersAuthorizer": [route.scope.as_str()]}]),
            "{} {}",
            route.method,
            route.path
        );
    }
    assert!(
        document.get("security").is_none(),
        "no document-wide override"
    );
    let authorizer = &scheme["x-amazon-apigateway-authorizer"];
    assert_eq!(authorizer["type"], "jwt");
    assert_eq!(
        authorizer["identitySource"],
        "$request.header.Authorization"
    );
    let configuration = authorizer["jwtConfiguration"].to_string();
    for parameter in ["${JwtIssuer}", "${JwtAudience}"] {
        assert!(configuration.contains(parameter), "{configuration}");
    }
}

#[test]
fn every_error_code_the_library_sends_is_in_the_document() {
    // Arrange: the documented codes and the library's sources.
    let codes: BTreeSet<&str> =
        openapi()["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("error code enum")
            .iter()
            .map(|code| code.as_str().unwrap())
            .collect();
    let sources: String = ["error.rs", "http/request.rs", "idempotency.rs", "user.rs"]
        .iter()
        .map(|file| {
            std::fs::read_to_string(repository_file(&format!("shared/src/{file}"))).unwrap()
        })
        .collect();

    // Act: the quoted words of the sources that look like error codes.
    let mut sent = BTreeSet::new();
    for (i, _) in sources.match_indices('"') {
        let rest = &sources[i + 1..];
        let Some(end) = rest.find('"') else { continue };
        let word = &rest[..end];
        if (word.starts_with("invalid_") || codes.contains(word)) && !word.contains(' ') {
            sent.insert(word);
        }
    }

    // Assert
    assert!(sent.len() >= 10, "{sent:?}");
    for code in sent {
        assert!(codes.contains(code), "{code} is sent but not documented");
    }
}

#[test]
fn the_local_router_serves_the_documented_routes() {
    // Arrange
    let manifest: toml::Table = std::fs::read_to_string(repository_file("Cargo.toml"))
        .unwrap()
        .parse()
        .expect("Cargo.toml");
    let router = manifest["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .expect("[workspace.metadata.lambda.watch.router]");

    // Act
    let mut routed = BTreeSet::new();
    for (path, routes) in router {
        for route in routes.as_array().expect("a list of routes") {
            let method = route["method"].as_str().unwrap().to_owned();
            let function = route["function"].as_str().unwrap().to_owned();
            routed.insert((method, path.clone(), function));
        }
    }

    // Assert
    assert_eq!(routed, documented_operations());
}

/// `template.yaml` as YAML values (CloudFormation's `!Ref` tags kept as tags).
fn template() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(repository_file("template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("template.yaml is valid YAML")
}

/// The text of a tagged or plain scalar (`!Ref X` -> `X`).
fn scalar(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::Tagged(tagged) => scalar(&tagged.value),
        serde_yaml_ng::Value::String(text) => text.clone(),
        other => format!("{other:?}"),
    }
}

#[test]
fn the_template_deploys_the_document_and_routes_each_operation_to_its_function() {
    // Arrange
    let template = template();
    let resources = template["Resources"].as_mapping().expect("Resources");
    let api = &template["Resources"]["UsersHttpApi"]["Properties"];

    // Act and assert: the API's definition is openapi.yaml, included;
    let include = &api["DefinitionBody"]["Fn::Transform"];
    assert_eq!(scalar(&include["Name"]), "AWS::Include");
    assert_eq!(scalar(&include["Parameters"]["Location"]), "openapi.yaml");
    // each documented operation goes to its function's alias, which API
    // Gateway may invoke;
    for (method, path, function) in documented_operations() {
        let operation = &openapi()["paths"][&path][method.to_ascii_lowercase()];
        let integration = &operation["x-amazon-apigateway-integration"];
        let uri = integration["uri"]["Fn::Sub"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no Lambda integration"));
        let resource = uri
            .split("functions/${")
            .nth(1)
            .and_then(|rest| rest.split(".Alias}").next())
            .unwrap_or_else(|| panic!("{method} {path}: the integration names no alias"));
        let built = &template["Resources"][resource]["Metadata"]["BuildProperties"]["Binary"];
        assert_eq!(scalar(built), function, "{method} {path} -> {resource}");
        assert_eq!(
            integration["payloadFormatVersion"], "2.0",
            "{method} {path}"
        );
        let permitted = resources.values().any(|candidate| {
            scalar(&candidate["Type"]) == "AWS::Lambda::Permission"
                && scalar(&candidate["Properties"]["FunctionName"]) == format!("{resource}.Alias")
        });
        assert!(permitted, "API Gateway may not invoke {resource}'s alias");
    }
    // and no function declares routes of its own: the functions of the API
    // declare no events at all, the consumer only its schedule.
    let mut api_functions = BTreeSet::new();
    for (name, resource) in resources {
        if scalar(&resource["Type"]) != "AWS::Serverless::Function" {
            continue;
        }
        let binary = scalar(&resource["Metadata"]["BuildProperties"]["Binary"]);
        let events = resource["Properties"].get("Events");
        if binary == CONSUMER {
            let events = events
                .and_then(serde_yaml_ng::Value::as_mapping)
                .unwrap_or_else(|| panic!("{name:?}: {CONSUMER} is started by a schedule"));
            assert!(!events.is_empty(), "{name:?}: no schedule");
            for (event, declared) in events {
                let kind = scalar(&declared["Type"]);
                assert!(
                    ["Schedule", "ScheduleV2"].contains(&kind.as_str()),
                    "{name:?}: event {event:?} of type {kind} reaches {CONSUMER}; only a schedule may"
                );
            }
        } else {
            assert!(
                events.is_none(),
                "{name:?} declares routes outside openapi.yaml"
            );
            api_functions.insert(binary);
        }
    }
    let routed: BTreeSet<String> = ROUTES
        .iter()
        .map(|route| route.function.to_owned())
        .collect();
    assert_eq!(api_functions, routed, "the template's functions of the API");
}

/// The files under `folder`, in its subfolders too (`tests/it/model/`).
fn rust_sources(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .flat_map(|path| {
            if path.is_dir() {
                rust_sources(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn every_event_fixture_is_sent_by_a_test() {
    // Arrange
    let sources: String = rust_sources(&repository_file("tests/it"))
        .iter()
        .map(|file| std::fs::read_to_string(file).unwrap())
        .collect();
    let fixtures = std::fs::read_dir(test_support::events_dir()).unwrap();

    // Act
    let unused: Vec<String> = fixtures
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|file| file.strip_suffix(".json").map(str::to_owned))
        .filter(|name| {
            // By its whole name, by its case (`"bad-uuid"`), or as a
            // `{function}.{version}` built from parts.
            let parts: Vec<&str> = name.split('.').collect();
            let used = match parts.as_slice() {
                [_, case, _] => sources.contains(&format!("\"{case}\"")),
                [function, _] => sources.contains(&format!("{function}.{{version}}")),
                _ => false,
            };
            !(used || sources.contains(&format!("\"{name}\"")))
        })
        .collect();

    // Assert
    assert!(unused.is_empty(), "fixtures no test sends: {unused:?}");
}
