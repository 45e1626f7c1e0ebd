"""Renders deploy/prometheus/alerts.yaml as the PrometheusRule in
deploy/k8s/base/prometheusrule.yaml, so the rules exist once.

    python3 deploy/tools/prometheusrule.py            # print
    python3 deploy/tools/prometheusrule.py --check    # exit 1 if the file differs
    python3 deploy/tools/prometheusrule.py --write    # rewrite the file

Run by deploy/check.sh (--check, or --write with `check.sh --write`).
"""

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yaml"
RULE = ROOT / "deploy/k8s/base/prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by deploy/tools/prometheusrule.py
# (`bash deploy/check.sh --write`). Edit alerts.yaml, not this file:
# deploy/check.sh fails when the two differ.
"""


class Literal(str):
    """A string dumped as a YAML block scalar, so PromQL stays readable."""


def literal(dumper, value):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


yaml.SafeDumper.add_representer(Literal, literal)


def blockify(node):
    if isinstance(node, dict):
        return {key: blockify(value) for key, value in node.items()}
    if isinstance(node, list):
        return [blockify(value) for value in node]
    if isinstance(node, str) and "\n" in node:
        return Literal(node)
    return node


def render() -> str:
    rules = yaml.safe_load(ALERTS.read_text())
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "corral", "labels": {"app.kubernetes.io/name": "corral"}},
        "spec": {"groups": rules["groups"]},
    }
    body = yaml.safe_dump(blockify(resource), sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main() -> int:
    text = render()
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "--write":
        RULE.write_text(text)
        return 0
    if mode == "--check":
        if not RULE.exists() or RULE.read_text() != text:
            print(
                f"{RULE.relative_to(ROOT)} is out of date with {ALERTS.relative_to(ROOT)}: "
                "run `bash deploy/check.sh --write`",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
