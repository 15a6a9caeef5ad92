"""The IAM policies of ``deploy/stack.yaml``, read from the template and made concrete.

The CloudFormation template is the one place the policies are written: what CloudFormation
deploys is what this module returns, and the least-privilege tests (``tests/deploy``) attach
exactly these documents to a principal in moto. ``Ref``, ``Fn::Sub`` and ``Fn::GetAtt`` are
resolved from the values given (parameter and resource names, ``Name.Attribute`` for GetAtt,
``AWS::Region`` and friends); anything unresolved is an error, never a silent wildcard.

Print a role's policies for given values, e.g. to review them::

    .venv/bin/python deploy/policies.py S3TaskRole UploadBucket=my-bucket KeyPrefix=uploads/ \\
        S3AppLogGroup=/prod/s3svc DownloadUrlSeconds=0 AWS::Region=eu-west-1 \\
        AWS::AccountId=123456789012
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().with_name("stack.yaml")
DEFAULTS = {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short tags (``!Ref x``) into their long form."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain data, short tags in their long form (``{"Fn::Sub": ...}``)."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506
    assert isinstance(data, dict)
    return data


class Unresolved(KeyError):
    """A reference in a policy has no value."""


NO_VALUE = object()  # ``Ref: AWS::NoValue``: the list item or key it stands in is left out


def resolve(
    node: Any, values: Mapping[str, str], conditions: Mapping[str, Any] | None = None
) -> Any:
    """``node`` with every Ref/Sub/GetAtt replaced by its value from ``values`` (+ DEFAULTS);
    ``Fn::If`` picks its branch by evaluating the named entry of ``conditions`` (the template's
    ``Conditions``) with the same values."""
    env = {**DEFAULTS, **values}
    conds = conditions or {}

    def lookup(name: str) -> str:
        if name not in env:
            raise Unresolved(f"no value for {name!r}; pass it (e.g. {name}=...)")
        return env[name]

    def again(x: Any) -> Any:
        return resolve(x, values, conds)

    def holds(name: str) -> bool:
        if name not in conds:
            raise Unresolved(f"no condition {name!r} in the template")
        return bool(truth(conds[name]))

    def truth(cond: Any) -> Any:
        if isinstance(cond, dict) and set(cond) == {"Condition"}:
            return holds(cond["Condition"])
        if isinstance(cond, dict) and set(cond) == {"Fn::Equals"}:
            left, right = (str(again(x)) for x in cond["Fn::Equals"])
            return left == right
        if isinstance(cond, dict) and set(cond) == {"Fn::Not"}:
            return not truth(cond["Fn::Not"][0])
        if isinstance(cond, dict) and set(cond) == {"Fn::And"}:
            return all(truth(c) for c in cond["Fn::And"])
        if isinstance(cond, dict) and set(cond) == {"Fn::Or"}:
            return any(truth(c) for c in cond["Fn::Or"])
        raise Unresolved(f"cannot evaluate condition {cond!r}")

    if isinstance(node, list):
        return [item for item in (again(x) for x in node) if item is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if node == {"Ref": "AWS::NoValue"}:
        return NO_VALUE
    if set(node) == {"Ref"}:
        return lookup(node["Ref"])
    if set(node) == {"Fn::If"}:
        name, then, otherwise = node["Fn::If"]
        return again(then if holds(name) else otherwise)
    if set(node) == {"Fn::GetAtt"}:
        return lookup(".".join(node["Fn::GetAtt"]))
    if set(node) == {"Fn::Sub"}:
        arg = node["Fn::Sub"]
        text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        scoped = {**values, **{k: again(v) for k, v in local.items()}}
        return _SUB_VAR.sub(lambda m: resolve({"Ref": m.group(1)}, scoped), text)
    if set(node) == {"Fn::Join"}:
        sep, parts = node["Fn::Join"]
        return sep.join(again(p) for p in parts)
    unknown = [k for k in node if k.startswith("Fn::")]
    if unknown:
        raise Unresolved(f"cannot resolve {unknown[0]} in a policy")
    resolved = {k: again(v) for k, v in node.items()}
    return {k: v for k, v in resolved.items() if v is not NO_VALUE}


def role_policies(
    role: str, values: Mapping[str, str], template: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The inline policies of the role ``role`` (logical id), by policy name, made concrete."""
    tpl = template if template is not None else load_template()
    resource = tpl["Resources"][role]
    if resource["Type"] != "AWS::IAM::Role":
        raise ValueError(f"{role} is a {resource['Type']}, not an AWS::IAM::Role")
    conditions = tpl.get("Conditions", {})
    return {
        p["PolicyName"]: resolve(p["PolicyDocument"], values, conditions)
        for p in resource["Properties"].get("Policies", [])
    }


def main(argv: list[str]) -> int:
    """``policies.py ROLE NAME=VALUE...``: print the role's policies as JSON."""
    if not argv or any("=" not in a for a in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    values = dict(a.split("=", 1) for a in argv[1:])
    try:
        print(json.dumps(role_policies(argv[0], values), indent=2))
    except Unresolved as exc:
        print(f"policies.py: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
