//! `template.yaml` is deployable as is: cfn-lint (which expands the SAM
//! transform) reports nothing, and the security settings the issue asks for
//! are there.
//!
//! Without cfn-lint the lint test prints a notice and passes locally, but fails
//! when `CI` is set: CI must not silently skip it (`pip install cfn-lint`).

use std::path::PathBuf;
use std::process::Command;

fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
}

fn template() -> String {
    std::fs::read_to_string(template_path()).expect("read template.yaml")
}

#[test]
fn cfn_lint_reports_nothing() {
    // Arrange
    let mut command = Command::new("cfn-lint");
    command.arg(template_path());

    // Act
    let output = match command.output() {
        Ok(output) => output,
        Err(error) if std::env::var_os("CI").is_some() => {
            panic!("cfn-lint is required in CI (pip install cfn-lint): {error}")
        }
        Err(error) => {
            eprintln!("NOTICE: cfn-lint not runnable ({error}); template not linted");
            return;
        }
    };

    // Assert
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "cfn-lint failed:\n{report}");
    assert_eq!(report.trim(), "", "cfn-lint reported:\n{report}");
}

#[test]
fn no_iam_statement_allows_every_action() {
    // Arrange
    let template = template();

    // Act
    let wildcards: Vec<&str> = template
        .lines()
        .filter(|line| line.trim_start().starts_with("Action") && line.contains('*'))
        .collect();

    // Assert
    assert!(wildcards.is_empty(), "wildcard actions: {wildcards:?}");
    assert!(template.contains("Action: secretsmanager:GetSecretValue"));
    assert!(template.contains("Resource: !Ref DatabaseSecretArn"));
    assert!(template.contains("kms:ViaService"));
}

#[test]
fn the_template_asks_for_the_token_issuer_and_never_trusts_local_headers() {
    // Arrange
    let template = template();

    // Act and assert
    assert!(template.contains("  JwtIssuer:"), "JwtIssuer parameter");
    assert!(template.contains("  JwtAudience:"), "JwtAudience parameter");
    let settings = template
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'));
    assert!(
        !settings
            .clone()
            .any(|line| line.contains("AUTH_LOCAL_HEADERS")),
        "the local-only caller headers must never be on in a deployment"
    );
    assert!(settings.clone().any(|line| line.contains("DATABASE_URL:")));
}

#[test]
fn the_functions_get_the_settings_of_tls_secrets_cluster_and_concurrency() {
    // Arrange
    let template = template();

    // Act and assert
    for expected in [
        "DATABASE_SECRET_ARN: !Ref DatabaseSecretArn",
        "PG_CA_FILE: !If [HasRdsCaBundle, /opt/rds-global-bundle.pem, \"\"]",
        "REDIS_CLUSTER: !Ref RedisCluster",
        "ReservedConcurrentExecutions: !If",
        "Architectures: [arm64]",
        "RetentionInDays: !Ref LogRetentionDays",
        "ThrottlingBurstLimit: !Ref ThrottlingBurstLimit",
        "SubnetIds: !Ref SubnetIds",
    ] {
        assert!(
            template.contains(expected),
            "template.yaml lacks {expected}"
        );
    }
}
