//! Properties of request parsing: whatever a client sends, turning it into
//! input either succeeds with a value that holds its invariants or fails with a
//! 4xx `ApiError`, and never panics.
//!
//! Events are built from the fixtures in `events/`, with the parts a client
//! controls (body, content type, path, query) replaced by generated values in
//! the form API Gateway delivers them: the raw path and query percent-encoded,
//! path and query parameters decoded, binary bodies base64-encoded. Events
//! API Gateway never sends (a body that is not base64 although flagged so, a
//! raw query with spaces) make `lambda_http` itself panic before our code runs;
//! they are not generated here, see `fuzz/fuzz_targets/request_parsing.rs`.

use lambda_http::http::{Request, header};
use lambda_http::{Body, request::from_str};
use proptest::prelude::*;
use serde_json::{Value, json};
use users_api::ApiError;
use users_api::config::Limits;
use users_api::http::{json_body, list_query, path_id};
use users_api::user::{NewUser, UserEmail, UserName, UserPayload};

/// 256 cases per property (proptest's default) keep the file to a few seconds
/// in CI; `PROPTEST_CASES=20000 cargo test --release` runs a longer search.
/// Up to one rejected case per accepted one is allowed, so a generator that
/// only made unusable events fails instead of passing on nothing. Failures are
/// printed shrunk, not persisted: a case worth keeping goes into the unit
/// tables beside the parser.
fn config() -> ProptestConfig {
    let defaults = ProptestConfig::default();
    ProptestConfig {
        max_global_rejects: defaults.cases,
        failure_persistence: None,
        ..defaults
    }
}

// ---------------------------------------------------------------- emails

/// Strings around the shape of an address, so that some of them parse.
fn email_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t]{0,2}[a-zA-Z0-9.+'\"<> ]{0,12}@[a-zA-Z0-9.\\-\\[\\]]{0,12}[ \t\n]{0,2}",
        "\\PC{1,8}@\\PC{1,8}\\.\\PC{1,4}",
        "[a-z]{1,6}[\u{0}-\u{1f}\u{7f}-\u{9f}\u{a0}\u{2000}-\u{200b}\u{3000}\u{feff}][a-z]{0,6}@example\\.com",
        "[a-z]{1,6}@[a-z]{1,6}[\u{0}-\u{1f}\u{a0}\u{2028}\u{3000}]?\\.[a-z]{2,4}",
        "[a-z]{1,6}@[a-z0-9-]{0,6}(\\.[a-z0-9-]{0,4}){0,2}\\.?",
        ("[a-z]{0,300}", "@[a-z]{1,10}\\.com").prop_map(|(local, domain)| local + &domain),
    ]
}

/// `local@domain` from the characters RFC 5322 allows unquoted, with a dotted
/// domain of LDH labels: addresses a user may really have.
fn plain_address() -> impl Strategy<Value = String> {
    let atom = "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}";
    let local = prop::collection::vec(atom, 1..4).prop_map(|atoms| atoms.join("."));
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?";
    let domain = (prop::collection::vec(label, 1..4), "[a-zA-Z]{2,6}")
        .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")));
    (local, domain).prop_map(|(local, domain)| format!("{local}@{domain}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn an_email_that_parses_is_a_trimmed_plain_address_within_the_limit(
        raw in email_like(),
        max_chars in 1usize..300,
    ) {
        // Act
        let parsed = UserEmail::parse(&raw, max_chars);

        // Assert
        let email = match parsed {
            Err(error) => {
                prop_assert_eq!(error.status(), 400);
                prop_assert_eq!(error.code(), "invalid_email");
                return Ok(());
            }
            Ok(email) => email,
        };
        let text = email.as_str();
        prop_assert_eq!(text, raw.trim());
        prop_assert!(!text.is_empty());
        prop_assert!(text.chars().count() <= max_chars);
        prop_assert!(
            !text.chars().any(|c| c.is_whitespace() || c.is_control()),
            "whitespace or control character in {:?}", text
        );
        prop_assert_eq!(text.matches('@').count(), 1, "{:?}", text);
        let (local, domain) = text.split_once('@').unwrap();
        prop_assert!(!local.is_empty(), "{:?}", text);
        prop_assert!(
            domain.split('.').count() >= 2 && domain.split('.').all(|label| !label.is_empty()),
            "domain of {:?} is not dotted", text
        );
        prop_assert_eq!(UserEmail::parse(text, max_chars).ok(), Some(email.clone()));
    }

    #[test]
    fn a_plain_address_is_accepted_trimmed_exactly_when_it_fits_the_limit(
        address in plain_address(),
        before in "[ \t\n]{0,3}",
        after in "[ \t\n]{0,3}",
        slack in -3isize..=3,
    ) {
        // Arrange
        let raw = format!("{before}{address}{after}");
        let length = address.chars().count();
        let max_chars = length.saturating_add_signed(slack);

        // Act
        let parsed = UserEmail::parse(&raw, max_chars);

        // Assert
        if length <= max_chars {
            prop_assert_eq!(parsed.ok().map(|email| email.as_str().to_owned()), Some(address));
        } else {
            prop_assert_eq!(parsed.unwrap_err().code(), "invalid_email");
        }
    }
}

// ----------------------------------------------------------------- names

fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t\n]{0,2}\\PC{0,20}[ \t\n]{0,2}",
        "[ \t\n\u{0}-\u{1f}\u{7f}-\u{9f}a-z]{0,10}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_name_that_parses_is_trimmed_printable_and_within_the_limit(
        raw in name_like(),
        max_chars in 1usize..30,
    ) {
        // Act
        let parsed = UserName::parse(&raw, max_chars);

        // Assert
        let name = match parsed {
            Err(error) => {
                prop_assert_eq!(error.status(), 400);
                prop_assert_eq!(error.code(), "invalid_name");
                return Ok(());
            }
            Ok(name) => name,
        };
        let text = name.as_str();
        prop_assert_eq!(text, raw.trim());
        prop_assert!((1..=max_chars).contains(&text.chars().count()), "{:?}", text);
        prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
        prop_assert_eq!(UserName::parse(text, max_chars).ok(), Some(name.clone()));
    }

    #[test]
    fn a_name_with_a_control_character_inside_is_rejected(
        before in "[\\S&&\\PC]\\PC{0,9}",
        control in "[\u{0}-\u{1f}\u{7f}-\u{9f}]",
        after in "\\PC{0,9}[\\S&&\\PC]",
    ) {
        // Arrange
        let raw = format!("{before}{control}{after}");

        // Act
        let error = UserName::parse(&raw, 200).unwrap_err();

        // Assert
        prop_assert_eq!(error.code(), "invalid_name");
        prop_assert_eq!(error.status(), 400);
    }

    #[test]
    fn a_printable_name_is_accepted_exactly_when_it_fits_the_limit(
        chars in prop::collection::vec("[\\S&&\\PC]", 1..40),
        slack in -3isize..=3,
    ) {
        // Arrange
        let raw = chars.concat();
        let max_chars = chars.len().saturating_add_signed(slack);

        // Act
        let parsed = UserName::parse(&raw, max_chars);

        // Assert
        if chars.len() <= max_chars {
            prop_assert_eq!(parsed.ok().map(|name| name.as_str().to_owned()), Some(raw));
        } else {
            prop_assert_eq!(parsed.unwrap_err().code(), "invalid_name");
        }
    }
}

// --------------------------------------------------------------- payload

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_payload_whose_keys_are_not_exactly_email_and_name_is_refused(
        object in prop::collection::btree_map(
            prop_oneof![
                Just("email".to_owned()),
                Just("name".to_owned()),
                Just("id".to_owned()),
                Just("created_at".to_owned()),
                Just("Email".to_owned()),
                any::<String>(),
            ],
            any::<String>().prop_map(Value::from),
            0..5,
        ).prop_filter("keys other than exactly {email, name}", |object| {
            object.keys().map(String::as_str).ne(["email", "name"])
        }),
    ) {
        // Arrange
        let body = serde_json::to_string(&object).unwrap();

        // Act
        let payload = serde_json::from_str::<UserPayload>(&body);

        // Assert
        prop_assert!(payload.is_err(), "accepted {}", body);
    }

    #[test]
    fn a_payload_of_exactly_email_and_name_strings_is_read(
        email in any::<String>(),
        name in any::<String>(),
    ) {
        // Arrange
        let body = json!({ "email": email, "name": name }).to_string();

        // Act
        let payload = serde_json::from_str::<UserPayload>(&body).unwrap();

        // Assert
        prop_assert_eq!((payload.email, payload.name), (email, name));
    }
}

// ---------------------------------------------------------------- events

const V2_TEMPLATES: [&str; 5] = [
    include_str!("../../events/create-user.v2.json"),
    include_str!("../../events/update-user.v2.json"),
    include_str!("../../events/find-user.v2.json"),
    include_str!("../../events/delete-user.v2.json"),
    include_str!("../../events/list-users.v2.json"),
];

/// What the client controls in a request, before API Gateway encodes it.
#[derive(Debug, Clone)]
struct Hostile {
    template: usize,
    content_type: Option<String>,
    body: Option<HostileBody>,
    path_id: Option<String>,
    keep_path_parameters: bool,
    query: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum HostileBody {
    Text(String),
    Binary(Vec<u8>),
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            4 => Just("application/json".to_owned()),
            2 => Just("application/merge-patch+json; charset=utf-8".to_owned()),
            2 => Just("APPLICATION/JSON ; charset=\"x\"".to_owned()),
            1 => Just("application/+json".to_owned()),
            5 => "[ -~]{0,40}",
            5 => "\\PC{0,20}",
            // Header values may not hold these: lambda_http refuses the event.
            1 => "application/json[\u{0}-\u{8}\n\r]",
        ],
    )
}

fn body() -> impl Strategy<Value = Option<HostileBody>> {
    let max = Limits::default().max_body_bytes;
    prop::option::weighted(
        0.9,
        prop_oneof![
            (
                email_like(),
                name_like(),
                prop::collection::btree_map("[a-z_]{1,10}", json_scalar(), 0..2)
            )
                .prop_map(|(email, name, extra)| {
                    let mut object = serde_json::Map::from_iter(extra);
                    object.insert("email".into(), email.into());
                    object.insert("name".into(), name.into());
                    HostileBody::Text(Value::Object(object).to_string())
                }),
            plain_address().prop_map(|email| {
                HostileBody::Text(json!({ "email": email, "name": "Ada" }).to_string())
            }),
            any::<String>().prop_map(HostileBody::Text),
            "[\\[\\]{}\":,0-9a-z\\\\ ]{0,40}".prop_map(HostileBody::Text),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(HostileBody::Binary),
            (max - 2..max + 3, any::<char>()).prop_map(|(bytes, c)| {
                HostileBody::Text(c.to_string().repeat(bytes / c.len_utf8()))
            }),
            (0..4 * max).prop_map(|depth| HostileBody::Text("[".repeat(depth))),
        ],
    )
}

fn query_pair() -> impl Strategy<Value = (String, String)> {
    let value = prop_oneof![
        any::<String>(),
        "-?[0-9]{0,12}",
        Just(String::new()),
        Just("0190f0c2-1111-7000-8000-000000000001".to_owned()),
        "[0-9a-fA-F-]{30,40}",
    ];
    (
        prop_oneof![
            Just("limit".to_owned()),
            Just("cursor".to_owned()),
            any::<String>()
        ],
        value,
    )
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        0..V2_TEMPLATES.len(),
        content_type(),
        body(),
        prop::option::of(prop_oneof![
            any::<String>(),
            "[0-9a-fA-F-]{30,40}",
            Just("0190f0c2-1111-7000-8000-000000000001".to_owned()),
        ]),
        any::<bool>(),
        prop::collection::vec(query_pair(), 0..4),
    )
        .prop_map(
            |(template, content_type, body, path_id, keep_path_parameters, query)| Hostile {
                template,
                content_type,
                body,
                path_id,
                keep_path_parameters,
                query,
            },
        )
}

/// The API Gateway v2 event for `input`, as API Gateway would encode it.
fn v2_event(input: &Hostile) -> String {
    let mut event: Value = serde_json::from_str(V2_TEMPLATES[input.template]).unwrap();
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("content-length");
    match &input.content_type {
        Some(content_type) => headers.insert("content-type".into(), content_type.clone().into()),
        None => headers.remove("content-type"),
    };
    let (body, is_base64) = match &input.body {
        None => (Value::Null, false),
        Some(HostileBody::Text(text)) => (text.clone().into(), false),
        Some(HostileBody::Binary(bytes)) => (base64(bytes).into(), true),
    };
    event["body"] = body;
    event["isBase64Encoded"] = is_base64.into();
    if let Some(id) = &input.path_id {
        let raw_path = format!("/users/{}", percent_encode(id));
        event["rawPath"] = raw_path.clone().into();
        event["requestContext"]["http"]["path"] = raw_path.into();
        event["pathParameters"] = json!({ "id": id });
    }
    if !input.keep_path_parameters {
        event.as_object_mut().unwrap().remove("pathParameters");
    }
    let raw_query = input
        .query
        .iter()
        .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    event["rawQueryString"] = raw_query.into();
    event["queryStringParameters"] = Value::Object(
        input
            .query
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(value.clone())))
            .collect(),
    );
    event.to_string()
}

fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (i, &byte)| {
            group | u32::from(byte) << (16 - 8 * i)
        });
        for i in 0..4 {
            encoded.push(if i <= chunk.len() {
                char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    encoded
}

/// Every error of the three parsers a handler may run on `request`.
fn parse_errors(request: &Request<Body>, limits: &Limits) -> Vec<ApiError> {
    [
        path_id(request).map(drop),
        json_body::<UserPayload>(request, limits)
            .and_then(|payload| NewUser::parse(payload, limits))
            .map(drop),
        list_query(request, limits).map(drop),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

fn json_request(content_type: &[u8], body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::Binary(body))
        .unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_v2_event_becomes_valid_input_or_a_client_error(input in hostile()) {
        // Arrange
        let event = v2_event(&input);
        let limits = Limits::default();

        // Act
        let request = from_str(&event);
        // An event lambda_http refuses never reaches a handler, but only
        // header values with control characters are expected to be refused:
        // were every event refused, proptest fails on too many rejects.
        prop_assume!(request.is_ok());
        let errors = parse_errors(&request.unwrap(), &limits);

        // Assert
        for error in errors {
            prop_assert!(
                (400..=415).contains(&error.status()),
                "{} ({}) for {:?}", error.status(), error.code(), input
            );
        }
    }

    #[test]
    fn a_json_body_over_the_limit_is_always_413(
        max_body_bytes in 0usize..2048,
        extra in prop_oneof![1usize..4, 1usize..2048],
        byte in any::<u8>(),
        content_type in prop_oneof![
            Just("application/json"),
            Just("Application/JSON; charset=utf-8"),
            Just(" application/vnd.api+json ;q=1"),
        ],
    ) {
        // Arrange
        let limits = Limits { max_body_bytes, ..Limits::default() };
        let request = json_request(
            content_type.as_bytes(),
            vec![byte; max_body_bytes + extra],
        );

        // Act
        let error = json_body::<UserPayload>(&request, &limits).unwrap_err();

        // Assert
        prop_assert_eq!(error.status(), 413);
        prop_assert_eq!(error.code(), "payload_too_large");
    }

    #[test]
    fn a_body_not_declared_as_json_is_always_415(
        content_type in prop_oneof![
            prop_oneof![
                "[ -~]{0,40}".prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..40),
            ].prop_filter("a header value not naming JSON", |value| {
                header::HeaderValue::from_bytes(value).is_ok()
                    && !String::from_utf8_lossy(value).to_ascii_lowercase().contains("json")
            }),
            Just(b"text/json".to_vec()),
            Just(b"application/jsonp".to_vec()),
            Just(b"application/json-seq".to_vec()),
            Just(b"application/x-www-form-urlencoded; a=application/json".to_vec()),
            Just(b"application/json\xff".to_vec()),
            Just(b"+json".to_vec()),
        ],
        body in prop::collection::vec(any::<u8>(), 0..64),
        declared in any::<bool>(),
    ) {
        // Arrange
        let limits = Limits::default();
        let request = if declared {
            json_request(&content_type, body)
        } else {
            Request::new(Body::Binary(body))
        };

        // Act
        let error = json_body::<UserPayload>(&request, &limits).unwrap_err();

        // Assert
        prop_assert_eq!(error.status(), 415);
        prop_assert_eq!(error.code(), "unsupported_media_type");
    }
}

#[test]
fn the_base64_helper_matches_the_standard_alphabet_with_padding() {
    // Arrange
    let cases: [(&[u8], &str); 4] = [
        (b"", ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"\xff\xfe\x00foo", "//4AZm9v"),
    ];

    for (bytes, expected) in cases {
        // Act
        let encoded = base64(bytes);

        // Assert
        assert_eq!(encoded, expected);
    }
}
