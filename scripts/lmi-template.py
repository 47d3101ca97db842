#!/usr/bin/env python3
"""Writes template-lmi.yaml: template.yaml's stack on Lambda Managed Instances.

One template cannot offer both with a parameter. The SAM translator refuses a
function with both `VpcConfig` and `CapacityProviderConfig` even when one of
them is an `Fn::If` that resolves to `AWS::NoValue` (it checks which keys are
present before CloudFormation evaluates conditions), and it parses
`CapacityProviderConfig` itself, so that property cannot be an `Fn::If`
either. So the LMI stack is a second template, derived from template.yaml by
the edits below; each must match template.yaml exactly once, so a change to
template.yaml that touches one of them stops this script instead of being
silently left out.

    scripts/lmi-template.py           write template-lmi.yaml
    scripts/lmi-template.py --check   exit 1 if template-lmi.yaml is not what
                                      this script writes (tests/it/template.rs)
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "template.yaml"
TARGET = ROOT / "template-lmi.yaml"

EDITS = [
    (
        "header",
        """\
# The stack on Lambda (default). template-lmi.yaml, the same stack on Lambda
# Managed Instances, is generated from this file by scripts/lmi-template.py:
# edit this one and run the script (docs/deploy.md, "Lambda Managed Instances").
""",
        """\
# GENERATED from template.yaml by scripts/lmi-template.py: edit template.yaml
# and run the script. The stack of template.yaml on Lambda Managed Instances
# (docs/deploy.md, "Lambda Managed Instances").
""",
    ),
    (
        "description",
        "  built by cargo-lambda): five behind one API Gateway HTTP API (payload format 2.0),\n",
        "  built by cargo-lambda) on Lambda Managed Instances: five behind one API Gateway\n"
        "  HTTP API (payload format 2.0),\n",
    ),
    (
        "concurrency parameters",
        """\
  ReservedConcurrencyPerFunction:
    Type: Number
    Default: 0
    MinValue: 0
    Description: >-
      Reserved concurrency of each of the six functions, 0 for none, otherwise at least 2:
      invalidate-cache's runs overlap, and with 1 each run would be throttled until the
      last one ended. It caps the Postgres connections the stack can open: at most 6 x this x
      PgPoolMaxSize (each concurrent execution environment holds up to PgPoolMaxSize
      connections), plus one listening connection per running invalidate-cache (two while
      its runs overlap). Keep that below the database's max_connections minus what
      migrations, admin sessions and other clients need (e.g. 10 with a pool of 2 is 120
      connections, plus 2). Without a reservation, a burst can
      open connections until Postgres refuses them; with many functions or small instances,
      put an RDS Proxy in front (DatabaseUrl pointing at the proxy) so connections are
      multiplexed. Reserved concurrency also comes out of the account's unreserved pool
      (which must keep at least 100).
""",
        """\
  # Lambda Managed Instances: the capacity (CapacityProvider below) and how the
  # functions use it. Empty: Lambda's default.
  MaxEnvironmentsPerFunction:
    Type: String
    Default: ""
    AllowedPattern: "^([1-9][0-9]*)?$"
    ConstraintDescription: "a positive whole number, or empty"
    Description: >-
      Most execution environments of each of the six functions
      (FunctionScalingConfig.MaxExecutionEnvironments); at least 2, since invalidate-cache
      serves one run at a time and its runs overlap. It caps the Postgres connections the
      stack can open: at most 6 x this x the pool size of one environment, plus one
      listening connection per running invalidate-cache (docs/deploy.md, "Connections").
      Keep that below the database's max_connections minus what migrations, admin
      sessions and other clients need, or put an RDS Proxy in front.
      Empty: Lambda's default, which AWS's documentation does not state consistently.
  MaxConcurrencyPerEnvironment:
    Type: String
    Default: ""
    AllowedPattern: "^([1-9][0-9]*)?$"
    ConstraintDescription: "a positive whole number, or empty"
    Description: >-
      Requests one execution environment serves at once
      (PerExecutionEnvironmentMaxConcurrency, which the function reads as
      AWS_LAMBDA_MAX_CONCURRENCY). Empty: Lambda's default for Rust, 8 per vCPU, so 8 with
      the one vCPU an environment gets here.
  CapacityProviderMaxVCpus:
    Type: String
    Default: ""
    AllowedPattern: "^([1-9][0-9]*)?$"
    ConstraintDescription: "a positive whole number, or empty"
    Description: >-
      Most vCPUs the capacity provider runs across all its instances, a ceiling on their
      cost (CapacityProviderScalingConfig.MaxVCpuCount, at least 2). Empty: no ceiling
      but Lambda's own.
""",
    ),
    (
        "pool size parameter",
        "(PG_POOL_MAX_SIZE; see ReservedConcurrencyPerFunction)",
        "(PG_POOL_MAX_SIZE; see MaxEnvironmentsPerFunction)",
    ),
    (
        "security groups parameter",
        "Description: Security groups of the functions (allowed by the database and cache security groups).",
        "Description: Security groups of the instances the functions run on (allowed by the database and cache security groups).",
    ),
    (
        "conditions",
        "  HasReservedConcurrency: !Not [!Equals [!Ref ReservedConcurrencyPerFunction, 0]]\n",
        """\
  HasMaxEnvironments: !Not [!Equals [!Ref MaxEnvironmentsPerFunction, ""]]
  HasMaxConcurrency: !Not [!Equals [!Ref MaxConcurrencyPerEnvironment, ""]]
  HasMaxVCpus: !Not [!Equals [!Ref CapacityProviderMaxVCpus, ""]]
""",
    ),
    (
        "memory",
        """\
    # 256 MB for the CPU share, not the memory: a function peaks at about 5 MB RSS
    # (VmHWM 5,064 - 5,416 kB, BENCHMARKS-history.md "Footprint"), but Lambda allocates CPU in
    # proportion to memory. Why 256 and not 128: docs/deploy.md, "Memory and timeout".
    MemorySize: 256
""",
        """\
    # The smallest execution environment Lambda Managed Instances runs: 2 GB and 1 vCPU
    # (the best-practices page of the Lambda guide). A function peaks at about 5 MB RSS
    # (BENCHMARKS-history.md "Footprint"), so the environment is sized for its vCPU.
    MemorySize: 2048
""",
    ),
    (
        "consumer memory",
        """\
      # Half the others' 256 MB, so half the cost of a function that runs all the time,
      # mostly waiting on Postgres and Redis. The others take 256 MB for the CPU of
      # cold starts and JSON their callers wait on; no caller waits on this one, and
      # its cold start happens while the previous run still listens
      # (docs/deploy.md, "The cache consumer").
      MemorySize: 128
""",
        """\
      # The global 2048 MB: Lambda Managed Instances run no smaller environment.
""",
    ),
    (
        "capacity provider config",
        """\
    ReservedConcurrentExecutions: !If
      - HasReservedConcurrency
      - !Ref ReservedConcurrencyPerFunction
      - !Ref AWS::NoValue
""",
        """\
    # The functions run on CapacityProvider's instances, which are in the VPC: no
    # VpcConfig here (SAM refuses it beside CapacityProviderConfig). No reserved
    # concurrency either: FunctionScalingConfig bounds the environments (whether
    # reserved concurrency applies to these functions, AWS's documentation does not say).
    CapacityProviderConfig:
      Arn: !GetAtt CapacityProvider.Arn
      # GiB of memory per vCPU, the smallest ratio allowed (2 to 8): with MemorySize
      # 2048, one vCPU per environment.
      ExecutionEnvironmentMemoryGiBPerVCpu: 2
      PerExecutionEnvironmentMaxConcurrency: !If
        - HasMaxConcurrency
        - !Ref MaxConcurrencyPerEnvironment
        - !Ref AWS::NoValue
    FunctionScalingConfig:
      MaxExecutionEnvironments: !If
        - HasMaxEnvironments
        - !Ref MaxEnvironmentsPerFunction
        - !Ref AWS::NoValue
    # API Gateway and the schedule invoke the alias `live` (AutoPublishAlias below), a
    # numbered version. An unqualified invocation runs the version $LATEST.PUBLISHED (the
    # Lambda guide, "$LATEST.PUBLISHED version"), which SAM documents this flag as
    # publishing on each update: so it never runs older code, with an older cache key
    # format, than the alias (docs/cache.md, "Key format version and deployments").
    PublishToLatestPublished: true
""",
    ),
    (
        "pool comment",
        """\
        # One Lambda execution environment serves one request at a time. Every
        # other setting (timeouts, limits) keeps the code's default.
""",
        """\
        # One execution environment serves up to MaxConcurrencyPerEnvironment
        # requests at once, all from one pool (docs/deploy.md, "Connections").
        # Every other setting (timeouts, limits) keeps the code's default.
""",
    ),
    (
        "function vpc",
        """\
        PG_POOL_MAX_SIZE: !Ref PgPoolMaxSize
    VpcConfig:
      SubnetIds: !Ref SubnetIds
      SecurityGroupIds: !Ref SecurityGroupIds
""",
        """\
        PG_POOL_MAX_SIZE: !Ref PgPoolMaxSize
""",
    ),
    (
        "capacity provider",
        """\
  # Shared execution role: the AWS managed VPC access policy (ENI management in the VPC
  # + CloudWatch Logs writes) and, when a secret is configured, reading that one secret
""",
        """\
  # The EC2 capacity the six functions run on, in the stack's subnets and security
  # groups; Lambda launches, patches and scales the instances. The CloudFormation
  # resource rather than AWS::Serverless::CapacityProvider: cfn-lint does not know the
  # SAM resource's Arn attribute, and the operator role below is then in plain sight.
  CapacityProvider:
    Type: AWS::Lambda::CapacityProvider
    Properties:
      VpcConfig:
        SubnetIds: !Ref SubnetIds
        SecurityGroupIds: !Ref SecurityGroupIds
      PermissionsConfig:
        CapacityProviderOperatorRoleArn: !GetAtt CapacityProviderOperatorRole.Arn
      # The functions' architecture (the default would be x86_64).
      InstanceRequirements:
        Architectures: [arm64]
      # ScalingMode Auto, as SAM writes it when only the ceiling is given.
      CapacityProviderScalingConfig: !If
        - HasMaxVCpus
        - MaxVCpuCount: !Ref CapacityProviderMaxVCpus
          ScalingMode: Auto
        - !Ref AWS::NoValue

  # The role Lambda assumes to launch and manage the instances: the AWS managed
  # operator policy, which the Lambda guide names as the minimum (it also lets Lambda
  # write the capacity provider's own logs).
  CapacityProviderOperatorRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal:
              Service: lambda.amazonaws.com
            Action: sts:AssumeRole
      ManagedPolicyArns:
        - !Sub arn:${AWS::Partition}:iam::aws:policy/AWSLambdaManagedEC2ResourceOperator

  # Shared execution role: the AWS managed basic execution policy (CloudWatch Logs
  # writes; the instances, not the functions, are in the VPC) and, when a secret is
  # configured, reading that one secret
""",
    ),
    (
        "execution policy",
        "policy/service-role/AWSLambdaVPCAccessExecutionRole",
        "policy/service-role/AWSLambdaBasicExecutionRole",
    ),
]


def generate(source: str) -> str:
    for name, old, new in EDITS:
        count = source.count(old)
        if count != 1:
            sys.exit(
                f"lmi-template: edit '{name}' matches template.yaml {count} times, "
                "not once; update scripts/lmi-template.py"
            )
        source = source.replace(old, new)
    return source


def main() -> None:
    generated = generate(SOURCE.read_text())
    if sys.argv[1:] == ["--check"]:
        if not TARGET.exists() or TARGET.read_text() != generated:
            sys.exit(
                "template-lmi.yaml is not what scripts/lmi-template.py makes of "
                "template.yaml: run scripts/lmi-template.py"
            )
    elif sys.argv[1:]:
        sys.exit(__doc__)
    else:
        TARGET.write_text(generated)


if __name__ == "__main__":
    main()
