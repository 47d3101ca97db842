//! Both templates are deployable as they are: `template.yaml` (Lambda) and
//! `template-lmi.yaml` (Lambda Managed Instances), which must be what
//! `scripts/lmi-template.py` makes of the first. cfn-lint reports nothing on
//! each; the SAM translator accepts each (cfn-lint 1.58 checks SAM resources
//! against schemas only, which let through templates the transform refuses)
//! and cfn-lint reports nothing on what it makes of them; each runs the five
//! functions where it says; the security settings the issue asks for are there.
//!
//! Without cfn-lint, or the Python beside it that has the translator
//! (`scripts/test.sh` puts both on PATH), the lint tests print a notice and pass
//! locally, but fail when `CI` is set: CI must not silently skip them.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output};
use test_support::contract::repository_file;

const LAMBDA: &str = "template.yaml";
const MANAGED_INSTANCES: &str = "template-lmi.yaml";

fn template(name: &str) -> String {
    std::fs::read_to_string(repository_file(name)).expect("read the template")
}

/// Runs a tool; `None` (after a notice) when it is not installed here. A
/// missing tool fails the test in CI.
fn run_tool(command: &mut Command, unavailable_code: Option<i32>) -> Option<Output> {
    let missing = match command.output() {
        Ok(output) if unavailable_code.is_none() || output.status.code() != unavailable_code => {
            return Some(output);
        }
        Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
        Err(error) => error.to_string(),
    };
    let program = command.get_program().to_string_lossy().into_owned();
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is required in CI (scripts/services.sh, ensure_cfn_lint): {missing}"
    );
    eprintln!("NOTICE: {program} not runnable ({missing}); skipped");
    None
}

fn report(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// cfn-lint reports nothing on `path`; false when cfn-lint is not installed.
fn assert_cfn_lint_clean(path: &PathBuf) -> bool {
    let Some(output) = run_tool(Command::new("cfn-lint").arg(path), None) else {
        return false;
    };
    let report = report(&output);
    assert!(
        output.status.success(),
        "cfn-lint failed on {}:\n{report}",
        path.display()
    );
    assert_eq!(
        report.trim(),
        "",
        "cfn-lint reported on {}:\n{report}",
        path.display()
    );
    true
}

/// Lints the template, translates it as the SAM transform would and lints the
/// result; returns that result, or `None` when the tools are not installed.
fn deployable(name: &str) -> Option<Value> {
    if !assert_cfn_lint_clean(&repository_file(name)) {
        return None;
    }
    let output = run_tool(
        Command::new(repository_file("scripts/sam-translate.py")).arg(repository_file(name)),
        Some(3),
    )?;
    assert!(
        output.status.success(),
        "the SAM transform refuses {name}:\n{}",
        report(&output)
    );
    let translated = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.json"));
    std::fs::write(&translated, &output.stdout).expect("write the translated template");
    assert_cfn_lint_clean(&translated);
    Some(serde_json::from_slice(&output.stdout).expect("the translator writes JSON"))
}

/// The five `AWS::Lambda::Function`s of a translated template.
fn functions(translated: &Value) -> Vec<(&String, &Value)> {
    let functions: Vec<_> = translated["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, resource)| resource["Type"] == "AWS::Lambda::Function")
        .map(|(name, resource)| (name, &resource["Properties"]))
        .collect();
    assert_eq!(functions.len(), 5, "five functions");
    functions
}

#[test]
fn the_lambda_template_is_deployable_and_puts_every_function_in_the_vpc() {
    // Arrange and act
    let Some(translated) = deployable(LAMBDA) else {
        return;
    };

    // Assert
    for (name, function) in functions(&translated) {
        assert_eq!(
            function["VpcConfig"]["SubnetIds"],
            json!({ "Ref": "SubnetIds" }),
            "{name}"
        );
        assert!(function.get("CapacityProviderConfig").is_none(), "{name}");
    }
}

#[test]
fn the_lmi_template_is_deployable_and_runs_every_function_on_the_capacity_provider() {
    // Arrange and act
    let Some(translated) = deployable(MANAGED_INSTANCES) else {
        return;
    };

    // Assert
    let provider = &translated["Resources"]["CapacityProvider"];
    assert_eq!(provider["Type"], "AWS::Lambda::CapacityProvider");
    assert_eq!(
        provider["Properties"]["VpcConfig"]["SubnetIds"],
        json!({ "Ref": "SubnetIds" })
    );
    for (name, function) in functions(&translated) {
        let config =
            &function["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"];
        assert_eq!(
            config["CapacityProviderArn"],
            json!({ "Fn::GetAtt": ["CapacityProvider", "Arn"] }),
            "{name}"
        );
        assert!(function.get("VpcConfig").is_none(), "{name}");
        assert!(
            function.get("ReservedConcurrentExecutions").is_none(),
            "{name}"
        );
        assert!(
            function["MemorySize"].as_u64() >= Some(2048),
            "{name}: 2 GB at least"
        );
        assert_eq!(
            function["Architectures"],
            provider["Properties"]["InstanceRequirements"]["Architectures"],
            "{name}: the instances' architecture"
        );
        assert_eq!(function["PublishToLatestPublished"], true, "{name}");
    }
}

#[test]
fn the_lmi_template_is_what_the_script_makes_of_template_yaml() {
    // Arrange
    let mut command = Command::new("python3");
    command
        .arg(repository_file("scripts/lmi-template.py"))
        .arg("--check");

    // Act
    let Some(output) = run_tool(&mut command, None) else {
        return;
    };

    // Assert
    assert!(output.status.success(), "{}", report(&output));
}

#[test]
fn no_iam_statement_allows_every_action() {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange
        let template = template(name);

        // Act
        let wildcards: Vec<&str> = template
            .lines()
            .filter(|line| line.trim_start().starts_with("Action") && line.contains('*'))
            .collect();

        // Assert
        assert!(
            wildcards.is_empty(),
            "{name}: wildcard actions: {wildcards:?}"
        );
        assert!(
            template.contains("Action: secretsmanager:GetSecretValue"),
            "{name}"
        );
        assert!(
            template.contains("Resource: !Ref DatabaseSecretArn"),
            "{name}"
        );
        assert!(template.contains("kms:ViaService"), "{name}");
    }
}

#[test]
fn the_template_asks_for_the_token_issuer_and_never_trusts_local_headers() {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange
        let template = template(name);

        // Act and assert
        assert!(
            template.contains("  JwtIssuer:"),
            "{name}: JwtIssuer parameter"
        );
        assert!(
            template.contains("  JwtAudience:"),
            "{name}: JwtAudience parameter"
        );
        let settings = template
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'));
        assert!(
            !settings
                .clone()
                .any(|line| line.contains("AUTH_LOCAL_HEADERS")),
            "{name}: the local-only caller headers must never be on in a deployment"
        );
        assert!(
            settings.clone().any(|line| line.contains("DATABASE_URL:")),
            "{name}"
        );
    }
}

#[test]
fn the_functions_get_the_settings_of_tls_secrets_cluster_and_concurrency() {
    let common = [
        "DATABASE_SECRET_ARN: !Ref DatabaseSecretArn",
        "PG_CA_FILE: !If [HasRdsCaBundle, /opt/rds-global-bundle.pem, \"\"]",
        "REDIS_CLUSTER: !Ref RedisCluster",
        "PG_POOL_MAX_SIZE: !Ref PgPoolMaxSize",
        "Architectures: [arm64]",
        "RetentionInDays: !Ref LogRetentionDays",
        "ThrottlingBurstLimit: !Ref ThrottlingBurstLimit",
        "SubnetIds: !Ref SubnetIds",
    ];
    let lambda = ["ReservedConcurrentExecutions: !If"];
    let managed_instances = [
        "Arn: !GetAtt CapacityProvider.Arn",
        "PerExecutionEnvironmentMaxConcurrency: !If",
        "MaxExecutionEnvironments: !If",
    ];
    for (name, own) in [
        (LAMBDA, &lambda[..]),
        (MANAGED_INSTANCES, &managed_instances[..]),
    ] {
        // Arrange
        let template = template(name);

        // Act and assert
        for expected in common.iter().chain(own) {
            assert!(template.contains(expected), "{name} lacks {expected}");
        }
    }
}
