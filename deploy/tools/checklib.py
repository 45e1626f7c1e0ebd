"""What the checks of deploy/ share: where things are, how a check reports,
how manifests and env files are read. Used by check_deploy.py and
check_operators.py (run from deploy/check.sh)."""

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
failures: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    print(("  ok    " if ok else "  FAIL  ") + what + ("" if ok or not detail else f": {detail}"))
    if not ok:
        failures.append(what)


def load_all(path: pathlib.Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def env_file(path: pathlib.Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values
