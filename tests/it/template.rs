//! Both templates are deployable as they are: `template.yaml` (Lambda) and
//! `template-lmi.yaml` (Lambda Managed Instances), which must be what
//! `scripts/lmi-template.py` makes of the first. cfn-lint reports nothing on
//! each; the SAM translator accepts each (cfn-lint 1.58 checks SAM resources
//! against schemas only, which let through templates the transform refuses)
//! and cfn-lint reports nothing on what it makes of them; each runs the six
//! functions where it says, each with the shared role and a log group of its
//! own; each is invoked through its alias `live` only, which a deployment
//! moves to the new version as `DeploymentType` says, rolled back by the
//! stack's alarms; only the five of the API may be invoked by API Gateway,
//! and the sixth, `invalidate-cache`, is started every minute in runs that
//! overlap; the security settings the issue asks for are there; tracing is off
//! unless the `Tracing` parameter turns it on, which gives every function the
//! collector layer, its endpoint, X-Ray active tracing and the role's X-Ray
//! permissions, and which a stack without a collector layer refuses.
//!
//! Without cfn-lint, or the Python beside it that has the translator
//! (`scripts/test.sh` puts both on PATH), the lint tests print a notice and pass
//! locally, but fail when `CI` is set: CI must not silently skip them.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use test_support::contract::repository_file;
use test_support::functions::ROUTES;
use users_api::Config;

const LAMBDA: &str = "template.yaml";
const MANAGED_INSTANCES: &str = "template-lmi.yaml";
/// The binary of the one function no route reaches: the consumer of the
/// change records, started by a schedule (docs/deploy.md, "The cache consumer").
const CONSUMER: &str = "invalidate-cache";
/// The alias everything invokes (docs/deploy.md, "Gradual deployments").
const ALIAS: &str = "live";
/// A collector layer, as `TracingCollectorLayerArn` takes it (docs/deploy.md,
/// "Traces").
const COLLECTOR_LAYER: &str =
    "arn:aws:lambda:us-east-1:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1";
/// Where that layer receives OTLP/HTTP.
const COLLECTOR_ENDPOINT: &str = "http://localhost:4318";
/// The AWS managed policy that lets Lambda and the collector write to X-Ray.
const XRAY_POLICY: &str = "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess";

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

/// cfn-lint reports nothing on `path` but the checks `ignored`; false when
/// cfn-lint is not installed.
fn assert_cfn_lint_clean(path: &PathBuf, ignored: &[&str]) -> bool {
    let mut command = Command::new("cfn-lint");
    for check in ignored {
        command.arg("--ignore-checks").arg(check);
    }
    let Some(output) = run_tool(command.arg("--").arg(path), None) else {
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

/// The template as the SAM transform makes it (CloudFormation, as JSON), or
/// `None` when the translator is not installed.
fn translate(name: &str) -> Option<Value> {
    let output = run_tool(
        Command::new(repository_file("scripts/sam-translate.py")).arg(repository_file(name)),
        Some(3),
    )?;
    assert!(
        output.status.success(),
        "the SAM transform refuses {name}:\n{}",
        report(&output)
    );
    Some(serde_json::from_slice(&output.stdout).expect("the translator writes JSON"))
}

/// Lints the template, translates it as the SAM transform would and lints the
/// result; returns that result, or `None` when the tools are not installed.
fn deployable(name: &str) -> Option<Value> {
    if !assert_cfn_lint_clean(&repository_file(name), &[]) {
        return None;
    }
    let translated = translate(name)?;
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&translated).expect("JSON");
    std::fs::write(&path, text).expect("write the translated template");
    // W2001, a parameter not used: the transform puts the value of
    // `DeploymentType` in place of its one use (`DeploymentPreference.Type`),
    // as SAM requires. The template itself is linted with every check above.
    assert_cfn_lint_clean(&path, &["W2001"]);
    Some(translated)
}

/// One `AWS::Lambda::Function` of a translated template.
struct Function<'a> {
    /// Its logical id.
    name: &'a str,
    /// The binary cargo-lambda builds for it (SAM keeps the `Metadata`).
    binary: &'a str,
    properties: &'a Value,
}

fn resources(translated: &Value) -> &serde_json::Map<String, Value> {
    translated["Resources"].as_object().expect("Resources")
}

/// The six functions of a translated template: the five of the API and the
/// consumer.
fn functions(translated: &Value) -> Vec<Function<'_>> {
    let functions: Vec<Function<'_>> = resources(translated)
        .iter()
        .filter(|(_, resource)| resource["Type"] == "AWS::Lambda::Function")
        .map(|(name, resource)| Function {
            name,
            binary: resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} names no binary")),
            properties: &resource["Properties"],
        })
        .collect();
    let binaries: BTreeSet<&str> = functions.iter().map(|function| function.binary).collect();
    let expected: BTreeSet<&str> = ROUTES
        .iter()
        .map(|route| route.function)
        .chain([CONSUMER])
        .collect();
    assert_eq!(binaries, expected, "six functions, one binary each");
    assert_eq!(functions.len(), 6, "six functions");
    functions
}

/// What every function has, whatever starts it: the shared role, and a log
/// group of its own, named after its binary, with the stack's retention.
fn assert_role_and_log_group(translated: &Value, function: &Function<'_>) {
    let name = function.name;
    assert_eq!(
        function.properties["Role"],
        json!({ "Fn::GetAtt": ["FunctionRole", "Arn"] }),
        "{name}"
    );
    let group = function.properties["LoggingConfig"]["LogGroup"]["Ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: no log group of the stack"));
    let group = &resources(translated)[group];
    assert_eq!(group["Type"], "AWS::Logs::LogGroup", "{name}");
    assert_eq!(
        group["Properties"]["LogGroupName"],
        json!({ "Fn::Sub": format!("/aws/lambda/${{AWS::StackName}}/{}", function.binary) }),
        "{name}"
    );
    assert_eq!(
        group["Properties"]["RetentionInDays"],
        json!({ "Ref": "LogRetentionDays" }),
        "{name}"
    );
}

/// The properties of each resource of `kind` that names `target`, a function
/// or an alias: by `Ref` in `FunctionName` (permissions, asynchronous
/// settings) or by ARN among its `Targets` (rules).
fn naming<'a>(translated: &'a Value, kind: &str, target: &str) -> Vec<&'a Value> {
    let arns = [
        json!({ "Ref": target }),
        json!({ "Fn::GetAtt": [target, "Arn"] }),
    ];
    resources(translated)
        .values()
        .filter(|resource| resource["Type"] == kind)
        .map(|resource| &resource["Properties"])
        .filter(|properties| {
            properties["FunctionName"] == json!({ "Ref": target })
                || properties["Targets"].as_array().is_some_and(|targets| {
                    targets.iter().any(|target| arns.contains(&target["Arn"]))
                })
        })
        .collect()
}

/// The template with these parameter values, the others at their defaults, as
/// CloudFormation would deploy it: each `Fn::If` resolved by its condition,
/// and what resolves to `AWS::NoValue` left out.
fn with_parameters(translated: &Value, given: &[(&str, &str)]) -> Value {
    let parameters = parameter_values(translated, given);
    let holds = |condition: &Value| holds(translated, &parameters, condition);
    resolve(translated, &holds).expect("the template itself is a value")
}

/// The value of each parameter: the given one, or its default.
fn parameter_values(translated: &Value, given: &[(&str, &str)]) -> BTreeMap<String, String> {
    let defaults = translated["Parameters"]
        .as_object()
        .expect("Parameters")
        .iter()
        .filter_map(|(name, parameter)| Some((name.clone(), text(parameter.get("Default")?))));
    let given = given
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()));
    defaults.chain(given).collect()
}

/// A scalar as CloudFormation compares it: as text.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Whether a condition, a rule's condition or an assertion holds with these
/// parameter values; the functions the templates use, and only those.
fn holds(translated: &Value, parameters: &BTreeMap<String, String>, condition: &Value) -> bool {
    let holds = |condition: &Value| holds(translated, parameters, condition);
    let operand = |value: &Value| match value["Ref"].as_str() {
        Some(name) => parameters
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no value for the parameter {name}")),
        None => text(value),
    };
    let (function, arguments) = condition
        .as_object()
        .and_then(|object| object.iter().next())
        .unwrap_or_else(|| panic!("not a condition: {condition}"));
    match (function.as_str(), arguments) {
        ("Fn::Equals", Value::Array(pair)) => operand(&pair[0]) == operand(&pair[1]),
        ("Fn::Not", Value::Array(one)) => !holds(&one[0]),
        ("Fn::And", Value::Array(all)) => all.iter().all(holds),
        ("Fn::Or", Value::Array(any)) => any.iter().any(holds),
        ("Condition", Value::String(name)) => holds(&translated["Conditions"][name]),
        _ => panic!("a condition this test cannot evaluate: {condition}"),
    }
}

/// `value` with each `Fn::If` resolved; `None` for `AWS::NoValue`.
fn resolve(value: &Value, holds: &dyn Fn(&Value) -> bool) -> Option<Value> {
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(branches)) = object.get("Fn::If") {
                let condition = json!({ "Condition": branches[0] });
                let branch = if holds(&condition) {
                    &branches[1]
                } else {
                    &branches[2]
                };
                return resolve(branch, holds);
            }
            if object.get("Ref") == Some(&json!("AWS::NoValue")) {
                return None;
            }
            let resolved = object
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), resolve(value, holds)?)))
                .collect();
            Some(Value::Object(resolved))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|item| resolve(item, holds))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The rules' assertions that fail with these parameter values (those of the
/// rules whose condition holds), by description: a stack CloudFormation
/// refuses to create or update, before it changes anything.
fn refused(translated: &Value, given: &[(&str, &str)]) -> Vec<String> {
    let parameters = parameter_values(translated, given);
    let holds = |condition: &Value| holds(translated, &parameters, condition);
    translated["Rules"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, rule)| rule.get("RuleCondition").is_none_or(holds))
        .flat_map(|(_, rule)| rule["Assertions"].as_array().into_iter().flatten())
        .filter(|assertion| !holds(&assertion["Assert"]))
        .map(|assertion| text(&assertion["AssertDescription"]))
        .collect()
}

/// The logical id of `function`'s alias [`ALIAS`], checked to point at a
/// version of the function and to be moved by CodeDeploy as the deployment
/// group says; and that deployment group.
fn alias<'a>(translated: &'a Value, function: &Function<'_>) -> (&'a str, &'a Value) {
    let name = function.name;
    let aliases: Vec<(&String, &Value)> = resources(translated)
        .iter()
        .filter(|(_, resource)| {
            resource["Type"] == "AWS::Lambda::Alias"
                && resource["Properties"]["FunctionName"] == json!({ "Ref": name })
        })
        .collect();
    assert_eq!(aliases.len(), 1, "{name}: one alias");
    let (id, alias) = aliases[0];
    assert_eq!(alias["Properties"]["Name"], ALIAS, "{name}");
    let version = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: the alias points at no version of the stack"));
    let version = &resources(translated)[version];
    assert_eq!(version["Type"], "AWS::Lambda::Version", "{name}");
    assert_eq!(
        version["Properties"]["FunctionName"],
        json!({ "Ref": name }),
        "{name}"
    );
    let update = &alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"];
    let group = update["DeploymentGroupName"]["Ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: CodeDeploy does not move the alias"));
    (id, &resources(translated)[group])
}

#[test]
fn the_lambda_template_is_deployable_and_puts_every_function_in_the_vpc() {
    // Arrange and act
    let Some(translated) = deployable(LAMBDA) else {
        return;
    };

    // Assert
    for function in functions(&translated) {
        let (name, properties) = (function.name, function.properties);
        assert_eq!(
            properties["VpcConfig"]["SubnetIds"],
            json!({ "Ref": "SubnetIds" }),
            "{name}"
        );
        assert!(properties.get("CapacityProviderConfig").is_none(), "{name}");
        assert_role_and_log_group(&translated, &function);
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
    for function in functions(&translated) {
        let (name, function) = (function.name, function.properties);
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
    for function in functions(&translated) {
        assert_role_and_log_group(&translated, &function);
    }
}

#[test]
fn only_the_five_functions_of_the_api_may_be_invoked_by_api_gateway_through_their_aliases() {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange
        let Some(translated) = translate(name) else {
            return;
        };

        for function in functions(&translated) {
            // Act
            let (alias, _) = alias(&translated, &function);
            let principals: BTreeSet<&str> = naming(&translated, "AWS::Lambda::Permission", alias)
                .into_iter()
                .map(|permission| permission["Principal"].as_str().unwrap_or("?"))
                .collect();
            let unqualified = naming(&translated, "AWS::Lambda::Permission", function.name);

            // Assert
            let expected = if function.binary == CONSUMER {
                ["events.amazonaws.com"]
            } else {
                ["apigateway.amazonaws.com"]
            };
            assert_eq!(
                principals,
                BTreeSet::from(expected),
                "{name}: who may invoke {}",
                function.binary
            );
            assert!(
                unqualified.is_empty(),
                "{name}: {} may be invoked besides its alias: {unqualified:?}",
                function.binary
            );
        }
    }
}

#[test]
fn the_api_integrates_the_aliases_which_a_deployment_moves_as_deployment_type_says_rolled_back_by_alarms()
 {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange
        let Some(translated) = translate(name) else {
            return;
        };
        let parameter = &translated["Parameters"]["DeploymentType"];
        let api = serde_json::to_string(&resources(&translated)["UsersHttpApi"]["Properties"])
            .expect("JSON");
        let api_alarm = &translated["Resources"]["ApiServerErrorsAlarm"]["Properties"];

        for function in functions(&translated) {
            // Act
            let (alias, group) = alias(&translated, &function);
            let group = &group["Properties"];

            // Assert: API Gateway invokes the alias, never the function itself;
            let integration = format!("functions/${{{alias}}}/invocations");
            let (unqualified, by_arn) = (
                format!("${{{}}}", function.name),
                format!("{}.Arn", function.name),
            );
            if function.binary == CONSUMER {
                assert!(!api.contains(alias), "{name}: the API integrates {alias}");
            } else {
                assert!(
                    api.contains(&integration),
                    "{name}: no route integrates {alias}"
                );
            }
            assert!(
                !api.contains(&unqualified) && !api.contains(&by_arn),
                "{name}: the API integrates {} itself",
                function.name
            );
            // CodeDeploy moves it as the parameter says (its default here:
            // the offline transform takes the parameters' defaults);
            assert_eq!(parameter["Default"], "AllAtOnce", "{name}");
            assert!(
                parameter["AllowedValues"]
                    .as_array()
                    .is_some_and(|types| types.len() > 1),
                "{name}: canary and linear types"
            );
            assert_eq!(
                group["DeploymentConfigName"],
                json!({ "Fn::Sub": ["CodeDeployDefault.Lambda${ConfigName}", { "ConfigName": "AllAtOnce" }] }),
                "{name}: {}",
                function.name
            );
            // and rolls it back when either alarm fires.
            assert_eq!(
                group["AutoRollbackConfiguration"]["Enabled"], true,
                "{name}"
            );
            assert!(
                group["AutoRollbackConfiguration"]["Events"]
                    .as_array()
                    .is_some_and(|events| events.contains(&json!("DEPLOYMENT_STOP_ON_ALARM"))),
                "{name}"
            );
            assert_eq!(group["AlarmConfiguration"]["Enabled"], true, "{name}");
            assert_eq!(
                group["AlarmConfiguration"]["Alarms"],
                json!([{ "Name": api_alarm["AlarmName"] }, { "Name": { "Ref": "ConsumerErrorsAlarm" } }]),
                "{name}: {}",
                function.name
            );
        }
        let consumer_alarm = &translated["Resources"]["ConsumerErrorsAlarm"]["Properties"];
        assert_eq!(consumer_alarm["MetricName"], "Errors", "{name}");
        assert_eq!(
            consumer_alarm["Dimensions"][1]["Value"],
            json!({ "Fn::Sub": format!("${{InvalidateCacheFunction}}:{ALIAS}") }),
            "{name}: the errors of the runs through the alias"
        );
        let metrics = serde_json::to_string(&api_alarm["Metrics"]).expect("JSON");
        assert!(
            metrics.contains("\"5xx\"") && metrics.contains("UsersHttpApi"),
            "{name}: the API's 5xx answers: {metrics}"
        );
    }
}

#[test]
fn the_consumer_runs_every_minute_in_overlapping_runs_that_are_never_retried() {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange
        let Some(translated) = translate(name) else {
            return;
        };
        let functions = functions(&translated);
        let consumer = functions
            .iter()
            .find(|function| function.binary == CONSUMER)
            .expect("the consumer");
        // The margin it stops by before its deadline: the template's, or the
        // code's default.
        let mut settings: BTreeMap<String, String> =
            consumer.properties["Environment"]["Variables"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(variable, value)| {
                    Some((variable.clone(), value.as_str()?.to_owned()))
                })
                .collect();
        settings.insert("DATABASE_URL".into(), "postgres://consumer@db/users".into());
        settings.insert("REDIS_URL".into(), "redis://cache:6379".into());
        let margin = Config::from_lookup(|variable| settings.get(variable).cloned())
            .expect("the consumer's settings")
            .changes
            .stop_before_deadline;

        // Act
        let (alias, _) = alias(&translated, consumer);
        let rules = naming(&translated, "AWS::Events::Rule", alias);
        let invoke_configs = naming(&translated, "AWS::Lambda::EventInvokeConfig", consumer.name);
        let timeout = consumer.properties["Timeout"]
            .as_u64()
            .map(Duration::from_secs)
            .expect("a timeout of its own");

        // Assert: started every minute by one rule;
        assert_eq!(rules.len(), 1, "{name}: one schedule");
        assert_eq!(rules[0]["ScheduleExpression"], "rate(1 minute)", "{name}");
        assert_ne!(rules[0]["State"], "DISABLED", "{name}");
        // each run works for longer than the minute, so that the next one
        // starts while it still listens;
        assert!(
            timeout.saturating_sub(margin) > Duration::from_secs(60),
            "{name}: a run works {:?}, so runs do not overlap",
            timeout.saturating_sub(margin)
        );
        // the auditor runs in it, at the rate the template's parameter sets;
        assert!(
            consumer.properties["Environment"]["Variables"]
                .get("CACHE_AUDIT_PER_SECOND")
                .is_some(),
            "{name}: CACHE_AUDIT_PER_SECOND"
        );
        // and a failed run is not run again, nor a late one started, since
        // the next minute's run takes over: the settings of the alias the
        // rule invokes.
        assert_eq!(invoke_configs.len(), 1, "{name}: asynchronous settings");
        assert_eq!(invoke_configs[0]["Qualifier"], ALIAS, "{name}");
        assert_eq!(invoke_configs[0]["MaximumRetryAttempts"], 0, "{name}");
        assert!(
            invoke_configs[0]["MaximumEventAgeInSeconds"].as_u64() <= Some(60),
            "{name}: an event older than the schedule's minute is dropped"
        );
    }
}

/// What tracing sets on one function of a deployed template: its X-Ray mode,
/// whether the collector layer is among its layers, and its collector
/// endpoint.
fn tracing_of<'a>(function: &Function<'a>) -> (&'a str, bool, Option<&'a str>) {
    let collector = json!({ "Ref": "TracingCollectorLayerArn" });
    (
        function.properties["TracingConfig"]["Mode"]
            .as_str()
            .unwrap_or("none"),
        function.properties["Layers"]
            .as_array()
            .is_some_and(|layers| layers.contains(&collector)),
        function.properties["Environment"]["Variables"]["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(),
    )
}

/// Whether the functions' role may write to X-Ray in a deployed template.
fn role_writes_traces(deployed: &Value) -> bool {
    deployed["Resources"]["FunctionRole"]["Properties"]["ManagedPolicyArns"]
        .as_array()
        .is_some_and(|policies| policies.contains(&json!({ "Fn::Sub": XRAY_POLICY })))
}

#[test]
fn tracing_is_off_by_default_without_collector_endpoint_or_x_ray_segments() {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange
        let Some(translated) = translate(name) else {
            return;
        };

        // Act: every parameter at its default.
        let deployed = with_parameters(&translated, &[]);

        // Assert
        assert_eq!(
            translated["Parameters"]["Tracing"]["Default"], "Off",
            "{name}"
        );
        for function in functions(&deployed) {
            assert_eq!(
                tracing_of(&function),
                ("PassThrough", false, None),
                "{name}: {}",
                function.binary
            );
        }
        assert!(!role_writes_traces(&deployed), "{name}");
        assert!(refused(&translated, &[]).is_empty(), "{name}");
    }
}

#[test]
fn tracing_on_gives_the_api_functions_the_collector_and_all_the_endpoint_and_active_tracing() {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange: with a secret, so that the function has the secrets
        // extension's layer, and the RDS CA bundle's, to keep.
        let Some(translated) = translate(name) else {
            return;
        };
        let secret = (
            "DatabaseSecretArn",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        );
        let on = [
            ("Tracing", "On"),
            ("TracingCollectorLayerArn", COLLECTOR_LAYER),
            secret,
        ];

        // Act
        let deployed = with_parameters(&translated, &on);
        let untraced = with_parameters(&translated, &[secret]);

        // Assert
        assert!(refused(&translated, &on).is_empty(), "{name}");
        assert!(role_writes_traces(&deployed), "{name}");
        let untraced = functions(&untraced);
        for function in functions(&deployed) {
            let binary = function.binary;
            // invalidate-cache's scheduled runs export no spans: no
            // collector shares its 128 MB.
            let traced = binary != "invalidate-cache";
            assert_eq!(
                tracing_of(&function),
                ("Active", traced, Some(COLLECTOR_ENDPOINT)),
                "{name}: {binary}"
            );
            let before = untraced
                .iter()
                .find(|before| before.name == function.name)
                .expect("the same functions");
            let mut layers = before.properties["Layers"].clone();
            assert_eq!(layers.as_array().map(Vec::len), Some(2), "{name}: {binary}");
            if traced {
                layers
                    .as_array_mut()
                    .expect("layers")
                    .push(json!({ "Ref": "TracingCollectorLayerArn" }));
            }
            assert_eq!(function.properties["Layers"], layers, "{name}: {binary}");
        }
    }
}

#[test]
fn a_stack_with_tracing_on_and_no_collector_layer_is_refused() {
    for name in [LAMBDA, MANAGED_INSTANCES] {
        // Arrange
        let Some(translated) = translate(name) else {
            return;
        };

        // Act
        let refusals = refused(&translated, &[("Tracing", "On")]);

        // Assert
        assert_eq!(refusals.len(), 1, "{name}: {refusals:?}");
        assert!(
            refusals[0].contains("TracingCollectorLayerArn"),
            "{name}: the refusal names the missing parameter: {refusals:?}"
        );
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
        "CACHE_GUARD_REPLICAS: !Ref CacheGuardReplicas",
        "AutoPublishAlias: live",
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
