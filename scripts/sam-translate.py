#!/usr/bin/env python3
"""Prints, as JSON, the CloudFormation that the SAM transform makes of a template.

    scripts/sam-translate.py TEMPLATE

cfn-lint 1.58 checks a SAM template against SAM's schemas but no longer runs
the SAM translator, which refuses some templates the schemas accept (a function
with both VpcConfig and CapacityProviderConfig, for one). tests/it/template.rs
runs this on each template and lints what it prints.

Offline, as close to a deployment as that allows: the `AWS::Include` of
openapi.yaml is expanded first, as CloudFormation does before the transform,
and each local CodeUri/ContentUri becomes an S3 location, as `sam package`
makes it. The region is us-east-1; no AWS call is made.

Needs aws-sam-translator and cfn-lint (for its CloudFormation YAML loader):
the Python of target/tools/cfn-lint (scripts/services.sh). Exits 1 with the
translator's reasons when it refuses the template, 3 when they are missing.
"""

import json
import sys
from pathlib import Path

try:
    import boto3
    from cfnlint.decode import decode
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
except ImportError as error:
    print(f"sam-translate: needs aws-sam-translator and cfn-lint: {error}", file=sys.stderr)
    sys.exit(3)


def load(path: Path):
    template, matches = decode(str(path))
    if matches:
        sys.exit(f"sam-translate: {path}: " + "; ".join(str(m) for m in matches))
    return template


def expand_includes(node, directory: Path):
    if isinstance(node, dict):
        transform = node.get("Fn::Transform")
        if isinstance(transform, dict) and transform.get("Name") == "AWS::Include":
            return load(directory / transform["Parameters"]["Location"])
        return {key: expand_includes(value, directory) for key, value in node.items()}
    if isinstance(node, list):
        return [expand_includes(value, directory) for value in node]
    return node


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = Path(sys.argv[1])
    template = expand_includes(load(path), path.parent)
    for name, resource in template.get("Resources", {}).items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://packaged/{name}.zip"
    translator = Translator(
        managed_policy_map={},
        sam_parser=Parser(),
        boto_session=boto3.session.Session(region_name="us-east-1"),
    )
    try:
        translated = translator.translate(template, parameter_values={})
    except InvalidDocumentException as error:
        sys.exit("\n".join(f"sam-translate: {cause}" for cause in error.causes))
    json.dump(translated, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
