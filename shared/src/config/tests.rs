//! The settings read from the environment, and the documented table of them.
use super::*;
use std::collections::HashMap;

fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

const REQUIRED: [(&str, &str); 2] = [
    ("DATABASE_URL", "postgres://app:s3cret@localhost/users"),
    ("REDIS_URL", "redis://127.0.0.1:6379"),
];

#[test]
fn defaults_apply_when_only_required_values_are_set() {
    let config = Config::from_lookup(lookup(&REQUIRED)).unwrap();
    assert_eq!(config.cache.ttl, Duration::from_secs(3600));
    assert_eq!(config.cache.key_prefix, "users-api");
    assert_eq!(config.postgres.pool_max_size, 2);
    assert_eq!(config.limits.max_body_bytes, 16384);
    assert_eq!(config.cache.write_guard, Duration::from_millis(13_000));
    assert_eq!(config.cache.guard_replicas, 0);
    assert!(!config.redis.cluster);
    assert!(config.postgres.secret.is_none());
    assert_eq!(config.metrics_namespace.as_deref(), Some("users-api"));
}

#[test]
fn the_pool_follows_the_environments_concurrency_unless_set() {
    for (concurrency, pool, expected) in [
        ("1", None, 2),
        ("8", None, 8),
        ("64", None, 16),
        ("64", Some("4"), 4),
    ] {
        // Arrange
        let mut pairs = vec![
            REQUIRED[0],
            REQUIRED[1],
            ("AWS_LAMBDA_MAX_CONCURRENCY", concurrency),
        ];
        pairs.extend(pool.map(|pool| ("PG_POOL_MAX_SIZE", pool)));

        // Act
        let config = Config::from_lookup(lookup(&pairs)).unwrap();

        // Assert
        assert_eq!(
            config.postgres.pool_max_size, expected,
            "concurrency {concurrency}, PG_POOL_MAX_SIZE {pool:?}"
        );
    }
}

#[test]
fn production_settings_are_read() {
    let config = Config::from_lookup(lookup(&[
        (
            "DATABASE_URL",
            "postgres://app@db.example.com/users?sslmode=verify-full",
        ),
        (
            "REDIS_URL",
            "rediss://a.example.com:6379,rediss://b.example.com:6379",
        ),
        ("REDIS_CLUSTER", "true"),
        ("PG_CA_FILE", "/opt/rds-global-bundle.pem"),
        (
            "DATABASE_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:1:secret:db",
        ),
        ("AWS_SESSION_TOKEN", "token"),
        ("METRICS_ENABLED", "false"),
    ]))
    .unwrap();
    assert_eq!(
        config.postgres.connection.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    assert!(config.redis.cluster);
    assert_eq!(config.postgres.secret.unwrap().port, 2773);
    assert!(config.metrics_namespace.is_none());
    let error = Config::from_lookup(lookup(&[
        REQUIRED[0],
        REQUIRED[1],
        (
            "DATABASE_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:1:secret:db",
        ),
    ]))
    .err()
    .unwrap();
    assert_eq!(error.variable, "AWS_SESSION_TOKEN");
}

/// The rows of the table in docs/configuration.md: variable and default cell.
fn documented() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let variable = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((variable.to_owned(), cells.get(2)?.to_string()))
        })
        .collect()
}

/// The code's value of `variable` in `config`, as the table writes it.
fn value_of(config: &Config, variable: &str) -> Option<String> {
    let ms = |duration: Duration| duration.as_millis().to_string();
    let secret = config.postgres.secret.as_ref();
    Some(match variable {
        "PG_CA_FILE" => format!("{:?}", config.postgres.ca_file),
        "REDIS_CA_FILE" => format!("{:?}", config.redis.ca_file),
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" => secret?.port.to_string(),
        "SECRETS_TIMEOUT_MS" => ms(secret?.timeout),
        "REDIS_CLUSTER" => config.redis.cluster.to_string(),
        "METRICS_ENABLED" => config.metrics_namespace.is_some().to_string(),
        "AUTH_LOCAL_HEADERS" => config.local_auth_headers.to_string(),
        "METRICS_NAMESPACE" => config.metrics_namespace.clone()?,
        "CACHE_KEY_PREFIX" => config.cache.key_prefix.clone(),
        "IDEMPOTENCY_TTL_SECONDS" => config.postgres.idempotency_ttl.as_secs().to_string(),
        "CACHE_TTL_SECONDS" => config.cache.ttl.as_secs().to_string(),
        "CACHE_FAIL_SAFE_SECONDS" => config.cache.fail_safe.as_secs().to_string(),
        "CACHE_FAIL_SAFE_TIMEOUT_MS" => ms(config.cache.fail_safe_timeout),
        "CACHE_EAGER_REFRESH_PERCENT" => config.cache.eager_refresh_percent.to_string(),
        "CACHE_NEGATIVE_TTL_SECONDS" => config.cache.negative_ttl.as_secs().to_string(),
        "CACHE_LEASE_MS" => ms(config.cache.lease),
        "CACHE_FILL_WAIT_MS" => ms(config.cache.fill_wait),
        "CACHE_WRITE_GUARD_MS" => ms(config.cache.write_guard),
        "CACHE_GUARD_REPLICAS" => config.cache.guard_replicas.to_string(),
        "PG_POOL_MAX_SIZE" => config.postgres.pool_max_size.to_string(),
        "AWS_LAMBDA_MAX_CONCURRENCY" => config.concurrency.to_string(),
        "PG_CONNECT_TIMEOUT_MS" => ms(config.postgres.connect_timeout),
        "PG_POOL_WAIT_TIMEOUT_MS" => ms(config.postgres.pool_wait_timeout),
        "PG_STATEMENT_TIMEOUT_MS" => ms(config.postgres.statement_timeout),
        "REDIS_CONNECT_TIMEOUT_MS" => ms(config.redis.connect_timeout),
        "REDIS_RESPONSE_TIMEOUT_MS" => ms(config.redis.response_timeout),
        "MAX_BODY_BYTES" => config.limits.max_body_bytes.to_string(),
        "NAME_MAX_CHARS" => config.limits.name_max_chars.to_string(),
        "EMAIL_MAX_CHARS" => config.limits.email_max_chars.to_string(),
        "LIST_MAX_LIMIT" => config.limits.list_max_limit.to_string(),
        "CHANGES_BATCH_SIZE" => config.changes.batch_size.to_string(),
        "CHANGES_RESCAN_MS" => ms(config.changes.rescan),
        "CHANGES_STOP_BEFORE_DEADLINE_MS" => ms(config.changes.stop_before_deadline),
        "CACHE_AUDIT_PER_SECOND" => config.changes.audit.per_second.to_string(),
        "CACHE_AUDIT_BOUND_MS" => ms(config.changes.audit.bound),
        "OTEL_EXPORTER_OTLP_TIMEOUT" => ms(config.traces.as_ref()?.timeout),
        "OTEL_SERVICE_NAME" => config.traces.as_ref()?.resource[0].1.clone(),
        _ => return None,
    })
}

#[test]
fn the_configuration_table_lists_every_variable_with_the_codes_default() {
    // Arrange: only what is required, plus a secret and a trace collector
    // so that their settings are read.
    let rows = documented();
    let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let base = lookup(&[
        REQUIRED[0],
        REQUIRED[1],
        ("DATABASE_SECRET_ARN", "db"),
        ("AWS_SESSION_TOKEN", "token"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
    ]);
    // What Lambda sets to describe the function (the spans' resource), not
    // settings of this project.
    let lambda_sets = [
        "AWS_REGION",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_STREAM_NAME",
    ];

    // Act
    let config = Config::from_lookup(|name| {
        read.borrow_mut().insert(name.to_owned());
        base(name)
    })
    .unwrap();

    // Assert
    let listed: std::collections::BTreeSet<String> =
        rows.iter().map(|(variable, _)| variable.clone()).collect();
    read.borrow_mut()
        .retain(|name| !lambda_sets.contains(&name.as_str()));
    assert_eq!(*read.borrow(), listed, "variables read vs. documented");
    for (variable, default) in &rows {
        let documented_value = default.split('`').nth(1);
        match (default.as_str(), documented_value) {
            ("required", _) => {
                let without = |name: &str| (name != variable).then(|| base(name)).flatten();
                let error = Config::from_lookup(without).err();
                assert_eq!(
                    error.map(|e| e.variable),
                    Some(variable.as_str()),
                    "{variable}"
                );
            }
            ("none", _) => {
                let value = value_of(&config, variable);
                assert!(
                    value.is_none() || value.as_deref() == Some("None"),
                    "{variable} is documented without a default but has {value:?}"
                );
            }
            (_, Some(expected)) => assert_eq!(
                value_of(&config, variable).as_deref(),
                Some(expected),
                "{variable}"
            ),
            (_, None) => panic!("{variable}: unreadable default cell {default:?}"),
        }
    }
}

#[test]
fn endpoints_lose_credentials_and_query() {
    let cases = [
        (
            "postgres://app:s3cret@db.example.com:5432/users?sslmode=require&password=s3cret",
            "postgres://db.example.com:5432/users",
        ),
        ("rediss://:s3cret@cache:6379/0", "rediss://cache:6379/0"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("postgres://u:p@ss@h/d", "postgres://h/d"),
    ];
    for (url, expected) in cases {
        assert_eq!(redacted_endpoint(url), expected, "{url}");
    }
}

#[test]
fn the_secrets_extension_port_defaults_to_2773_and_rejects_nonsense() {
    let port = |value: Option<&str>| {
        let mut pairs = vec![
            REQUIRED[0],
            REQUIRED[1],
            ("DATABASE_SECRET_ARN", "db"),
            ("AWS_SESSION_TOKEN", "token"),
        ];
        pairs.extend(value.map(|value| ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", value)));
        Config::from_lookup(lookup(&pairs)).map(|config| config.postgres.secret.unwrap().port)
    };
    assert_eq!(port(None), Ok(2773));
    assert_eq!(port(Some("2774")), Ok(2774));
    for bad in ["0", "70000", "http"] {
        let error = port(Some(bad)).unwrap_err();
        assert_eq!(
            error.variable, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
            "{bad}"
        );
    }
}

#[test]
fn fail_safe_and_eager_refresh_can_be_turned_off_with_zero() {
    // Arrange
    let pairs = [
        REQUIRED[0],
        REQUIRED[1],
        ("CACHE_FAIL_SAFE_SECONDS", "0"),
        ("CACHE_EAGER_REFRESH_PERCENT", "0"),
    ];

    // Act
    let config = Config::from_lookup(lookup(&pairs)).unwrap();

    // Assert
    assert_eq!(config.cache.fail_safe, Duration::ZERO);
    assert_eq!(config.cache.eager_refresh_percent, 0);
}

#[test]
fn missing_or_malformed_values_name_the_variable_and_hide_the_value() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("REDIS_URL", "redis://x")], "DATABASE_URL"),
        (&[("DATABASE_URL", "postgres://u:p@h/d")], "REDIS_URL"),
        (
            &[("DATABASE_URL", "mysql:// s3cret"), REQUIRED[1]],
            "DATABASE_URL",
        ),
        (
            &[REQUIRED[0], ("REDIS_URL", "http://user:s3cret@h")],
            "REDIS_URL",
        ),
        (
            &[REQUIRED[0], REQUIRED[1], ("CACHE_TTL_SECONDS", "soon")],
            "CACHE_TTL_SECONDS",
        ),
        (
            &[REQUIRED[0], REQUIRED[1], ("CACHE_TTL_SECONDS", "0")],
            "CACHE_TTL_SECONDS",
        ),
        (
            &[REQUIRED[0], REQUIRED[1], ("PG_POOL_MAX_SIZE", "-1")],
            "PG_POOL_MAX_SIZE",
        ),
        (
            &[REQUIRED[0], REQUIRED[1], ("CACHE_FAIL_SAFE_SECONDS", "-1")],
            "CACHE_FAIL_SAFE_SECONDS",
        ),
        (
            &[
                REQUIRED[0],
                REQUIRED[1],
                ("CACHE_EAGER_REFRESH_PERCENT", "100"),
            ],
            "CACHE_EAGER_REFRESH_PERCENT",
        ),
        (
            &[REQUIRED[0], REQUIRED[1], ("CACHE_GUARD_REPLICAS", "one")],
            "CACHE_GUARD_REPLICAS",
        ),
        (
            &[
                REQUIRED[0],
                REQUIRED[1],
                ("CACHE_GUARD_REPLICAS", "4294967296"),
            ],
            "CACHE_GUARD_REPLICAS",
        ),
    ];
    for (pairs, variable) in cases {
        let error = Config::from_lookup(lookup(pairs)).err().unwrap();
        assert_eq!(error.variable, *variable);
        let message = error.to_string();
        assert!(message.contains(variable), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
}

#[test]
fn traces_go_to_the_collector_named_by_the_opentelemetry_variables() {
    let traces = |pairs: &[(&'static str, &'static str)]| {
        let mut all = vec![REQUIRED[0], REQUIRED[1]];
        all.extend_from_slice(pairs);
        Config::from_lookup(lookup(&all)).map(|config| config.traces)
    };
    let at = |config: Option<TracesConfig>| {
        let config = config.expect("traces on");
        (config.host, config.port, config.authority, config.path)
    };
    let expected = |host: &str, port: u16, authority: &str, path: &str| {
        (host.to_owned(), port, authority.to_owned(), path.to_owned())
    };

    // Off unless an endpoint is set.
    assert_eq!(traces(&[]), Ok(None));
    assert_eq!(traces(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
    // The base endpoint gets /v1/traces; localhost is connected to by address.
    assert_eq!(
        at(traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318/")]).unwrap()),
        expected("127.0.0.1", 4318, "localhost:4318", "/v1/traces")
    );
    assert_eq!(
        at(traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1]:4318/otlp")]).unwrap()),
        expected("::1", 4318, "[::1]:4318", "/otlp/v1/traces")
    );
    // The traces endpoint is taken as it is, before the base one.
    assert_eq!(
        at(traces(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://10.0.0.5/traces"
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
        ])
        .unwrap()),
        expected("10.0.0.5", 80, "10.0.0.5", "/traces")
    );
    // Anything but a plain http:// URL is refused, naming the variable.
    for (variable, url) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://:4318"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://user:pw@localhost:4318",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://localhost:43180000/v1/traces",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://[::1/v1/traces",
        ),
    ] {
        let error = traces(&[(variable, url)]).expect_err(url);
        assert_eq!(error.variable, variable, "{url}");
        assert!(!error.to_string().contains(url), "the error echoes {url}");
    }
}
