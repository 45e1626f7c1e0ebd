#!/usr/bin/env python3
"""Split the `corral-shared` crate (`shared/`) into crates named by what they are.

Run from the repository root (or pass it as the only argument) on a clean
work tree, then review `git diff --stat` and commit:

    python3 scripts/dev/split-shared.py          # do the split
    python3 scripts/dev/split-shared.py --check  # only check it can be done

The split is driven by MAPPING (top-level module of `shared/src` -> crate),
not by line edits, so it can be re-run after the files changed. What it does:

- moves each module's files under `shared/<crate>/src/` (`git mv`); the
  crate in ROOT_MODULE_CRATES gets the module's own files as its root
  (`payload/mod.rs` becomes `shared/payload/src/lib.rs`);
- writes each crate's `lib.rs` (the old crate doc's bullet of each module it
  holds, its module declarations) and `Cargo.toml`: the dependencies are
  the old crate's, kept only where the moved code names them (dev-only if
  only tests do), and a feature is kept only where it still gates a module
  (a feature that gated a whole new crate becomes a dependency on it);
- rewrites Rust paths everywhere: `corral_shared::m::…` and, in moved files,
  `crate::m::…` to the crate now holding `m`; grouped imports
  (`use corral_shared::{a::X, b::Y};`) split per crate; relative
  `include_str!` paths of moved files;
- rewrites every member's `Cargo.toml` (one dependency per new crate its code
  names, the features it turned on given to the crate that has them now,
  `corral-shared/<feature>` in feature lists) and the workspace's members and
  `[workspace.dependencies]`; refreshes `Cargo.lock` offline; `cargo fmt`;
- names a re-export at its source (ALIASES: `payload::FAILURE_REASONS` is
  `corral_contract::provider::FAILURE_REASONS`), and turns `"corral_shared",`
  alone on a line (the docs test's list of crate names) into one per crate;
- rewrites `shared/src/…` file paths, `corral_shared::…` paths and
  `-p corral-shared --features <f>` in the other text files (docs,
  CONTRIBUTING.md, clippy.toml, deploy/ comments, deploy/tools/check_deploy.py's
  scan root) and in doc comments.

What it cannot decide it prints under "NEEDS A HUMAN" and exits 1 (the
split is done; those lines want a hand). It exits before touching anything
if the mapping does not cover a module or a root item, and stops before
cargo if the new crates would depend on each other in a cycle. Prose naming
the crate `corral-shared` is reworded only where PROSE says how, otherwise
listed (`deploy/k8s` has a ConfigMap of that name, which is not the crate).

On a main that has moved on: merge first, then run this, then build,
`cargo clippy --workspace --all-targets --locked -- -D warnings` and the
tests; a new module in shared/src needs one line in MAPPING (and a bullet
in the old lib.rs doc, which is carried to the new crate's Layout).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

OLD_DIR = "shared"
OLD_NAME = "corral-shared"
OLD_IDENT = "corral_shared"

# Top-level module of shared/src -> crate key. When the envelope becomes
# transport-neutral and its AMQP/SQS adapters live in `amqp`/`sqs`, nothing
# here changes: dependencies are computed from the code (lapin then leaves
# contract by itself). A new module must be added here.
MAPPING = {
    "envelope": "contract",
    "json": "contract",
    "provider": "contract",
    "results": "contract",
    "spool": "contract",
    "admin": "runtime",
    "amqp": "runtime",
    "config": "runtime",
    "error": "runtime",
    "postgres": "runtime",
    "retry": "runtime",
    "shutdown": "runtime",
    "sqs": "runtime",
    "telemetry": "runtime",
    "payload": "payload",
}

CRATES = {
    "contract": {
        "name": "corral-contract",
        "description": "The contract between corral-ingress and corral-worker, no I/O: the message envelope, the spool row, the accepted body shape, the provider's reason codes and the result event.",
        "doc": [
            "The contract between `corral-ingress` and `corral-worker`, and with the",
            "customer's services: what a message, a spooled row and a result event",
            "hold. Types, constants and pure functions only: no I/O, no client, so a",
            "contract changes in one place and reading it needs nothing else.",
        ],
    },
    "runtime": {
        "name": "corral-runtime",
        "description": "What both corral binaries run on: settings, telemetry and the metric catalogue, shutdown, retry, the admin listener, and the AMQP, SQS and PostgreSQL clients.",
        "doc": [
            "What both corral binaries run on: their shared settings, telemetry and",
            "the one metric catalogue, shutdown, retry, the admin listener, and the",
            "clients of the buffer and the database (AMQP, SQS, PostgreSQL). The",
            "message contract itself is `corral-contract`'s.",
        ],
    },
    "payload": {
        "name": "corral-payload",
        "description": "Typing and fingerprinting the Drop Cowboy payload: the worker and the load generator's verifier; ingress publishes bytes and never builds it.",
        "doc": None,  # the module's own doc (payload/mod.rs) is the crate doc
    },
}
# Crates whose root is the module of that name: `corral_shared::payload::X`
# becomes `corral_payload::X`.
ROOT_MODULE_CRATES = {"payload": "payload"}
# Re-exports to name at their source, so a crate needing only the contract
# does not depend on the crate that re-exports it.
ALIASES = {"payload::FAILURE_REASONS": "provider::FAILURE_REASONS"}
# Items the old lib.rs re-exported at its root: `pub use error::chain as error_chain;`.
ROOT_ITEMS = {"error_chain": "runtime"}
# Prose that names the crate, reworded (file -> [(old, new)]); a pair no
# longer found is reported, never guessed. docs/design.md's map is the
# lead's to rewrite, so it is only reported.
PROSE = {
    "CONTRIBUTING.md": [(
        "`shared/` (`corral-shared`: configuration, telemetry, topology, envelope, payload typing) ·\n",
        "`shared/` (`contract/`: `corral-contract`, the message and spool contract, no I/O;\n"
        "`runtime/`: `corral-runtime`, configuration, telemetry, clients; `payload/`: `corral-payload`,\n"
        "payload typing) ·\n",
    )],
    "docs/loadgen.md": [(
        "service: it depends on `corral-shared` alone.",
        "service: of corral's crates it depends on `corral-contract` and `corral-payload` alone.",
    )],
}
# Text files never rewritten: `corral-shared` there is not the crate.
TEXT_SKIP = ("deploy/k8s/", "Cargo.lock", "scripts/dev/split-shared.py")

human: list[str] = []
changed: dict[str, list[str]] = {}


def note(path: str, what: str) -> None:
    changed.setdefault(path, []).append(what)


def flag(text: str) -> None:
    human.append(text)


def crate_dir(key: str) -> str:
    return f"{OLD_DIR}/{key}"


def crate_ident(key: str) -> str:
    return CRATES[key]["name"].replace("-", "_")


def run(*args: str, check: bool = True) -> str:
    out = subprocess.run(args, capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.exit(f"split-shared: {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


# ---------------------------------------------------------------- preflight


def modules_on_disk() -> dict[str, list[Path]]:
    """Top-level module name -> its files (`m.rs` and everything under `m/`)."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(Path(OLD_DIR, "src").iterdir()):
        if entry.name == "lib.rs":
            continue
        name = entry.stem if entry.is_file() else entry.name
        if entry.is_file() and entry.suffix != ".rs":
            flag(f"{entry}: not a Rust file in shared/src; not moved")
            continue
        files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        found.setdefault(name, []).extend(files)
    return found


def parse_old_lib() -> tuple[dict[str, list[str]], dict[str, list[str]], list[tuple[str, str]]]:
    """The old lib.rs: doc bullet lines by module, declaration lines by module
    (with attributes), and root re-exports (item, line)."""
    lines = Path(OLD_DIR, "src/lib.rs").read_text().splitlines()
    bullets: dict[str, list[str]] = {}
    decls: dict[str, list[str]] = {}
    reexports: list[tuple[str, str]] = []
    current = None
    attrs: list[str] = []
    for line in lines:
        if line.startswith("//!"):
            body = line[3:]
            m = re.match(r" - \[?`([a-z_]+)`", body)
            if m:
                current = m.group(1)
                bullets[current] = [line]
            elif current and body.startswith("   ") and body.strip():
                bullets[current].append(line)
            else:
                current = None
            continue
        current = None
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#["):
            attrs.append(line)
            continue
        m = re.match(r"(pub(\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", stripped)
        if m:
            decls[m.group(3)] = attrs + [line]
            attrs = []
            continue
        m = re.match(r"pub use ([a-z_]+)::[a-z_:]+( as ([a-z_]+))?;", stripped)
        if m:
            item = m.group(3) or stripped.rstrip(";").split("::")[-1]
            reexports.append((item, line))
            attrs = []
            continue
        flag(f"shared/src/lib.rs: line not understood, not carried over: {line!r}")
    return bullets, decls, reexports


def preflight() -> tuple[dict[str, list[Path]], tuple]:
    if not Path(OLD_DIR, "Cargo.toml").exists():
        sys.exit(f"split-shared: no {OLD_DIR}/Cargo.toml here: already split, or not the repository root")
    name = tomllib.loads(Path(OLD_DIR, "Cargo.toml").read_text())["package"]["name"]
    if name != OLD_NAME:
        sys.exit(f"split-shared: {OLD_DIR}/Cargo.toml is {name!r}, not {OLD_NAME!r}")
    if run("git", "status", "--porcelain").strip():
        sys.exit("split-shared: the work tree has changes; commit or stash them first")
    modules = modules_on_disk()
    lib = parse_old_lib()
    missing = [m for m in modules if m not in MAPPING]
    undeclared = [m for m in modules if m not in lib[1]]
    for item, _ in lib[2]:
        if item not in ROOT_ITEMS:
            missing.append(f"root item {item}")
    for key in CRATES:
        if Path(crate_dir(key)).exists():
            sys.exit(f"split-shared: {crate_dir(key)} exists already")
    if missing or undeclared:
        for m in missing:
            print(f"split-shared: {m} has no crate: add it to MAPPING/ROOT_ITEMS", file=sys.stderr)
        for m in undeclared:
            print(f"split-shared: {m} is not declared in shared/src/lib.rs", file=sys.stderr)
        sys.exit(1)
    for key, module in ROOT_MODULE_CRATES.items():
        if [m for m, k in MAPPING.items() if k == key and m in modules] != [module]:
            sys.exit(f"split-shared: crate {key} must hold module {module} alone")
    return modules, lib


# ---------------------------------------------------------------- moving


def new_path(module: str, old: Path) -> Path:
    key = MAPPING[module]
    rel = old.relative_to(Path(OLD_DIR, "src"))
    if ROOT_MODULE_CRATES.get(key) == module:
        rel = rel.relative_to(module) if rel.parts[0] == module else rel
        if rel == Path("mod.rs") or rel == Path(f"{module}.rs"):
            rel = Path("lib.rs")
    return Path(crate_dir(key), "src", rel)


def move(modules: dict[str, list[Path]]) -> dict[Path, tuple[str, Path]]:
    """git mv every file; returns new path -> (module, old path)."""
    moved = {}
    for module, files in modules.items():
        for old in files:
            new = new_path(module, old)
            new.parent.mkdir(parents=True, exist_ok=True)
            run("git", "mv", str(old), str(new))
            moved[new] = (module, old)
    return moved


# ---------------------------------------------------------------- Rust paths

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def matching_brace(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced braces")


def split_top(items: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in items:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def head_of(item: str) -> str:
    m = re.match(IDENT, item)
    return m.group(0) if m else ""


def target_of(head: str) -> str | None:
    """The crate key a path starting `head` now lives in, if the mapping says."""
    if head in MAPPING:
        return MAPPING[head]
    if head in ROOT_ITEMS:
        return ROOT_ITEMS[head]
    return None


def rewrite_item(item: str, key: str, own: str | None) -> tuple[str, str]:
    """One use-tree item (or path tail) whose head is in crate `key`: the new
    prefix and the item relative to it."""
    prefix = "crate" if key == own else crate_ident(key)
    root_module = ROOT_MODULE_CRATES.get(key)
    head = head_of(item)
    if root_module and head == root_module:
        rest = item[len(head):]
        if rest.startswith("::{"):
            inner = rest[3:-1]
            parts = [f"self as {head}" if p == "self" else p for p in split_top(inner)]
            return prefix, "{" + ", ".join(parts) + "}"
        if rest.startswith("::"):
            return prefix, rest[2:]
        if rest.lstrip().startswith("as "):
            return "", f"{prefix} {rest.strip()}"
        if prefix == "crate":
            flag(f"`crate::{item}` names the crate root itself; left as it was")
            return "crate", item
        return "", f"{prefix} as {head}"
    return prefix, item


def join(prefix: str, item: str) -> str:
    return f"{prefix}::{item}" if prefix else item


USE_BEFORE = re.compile(r"(^|\n)([ \t]*)((?:pub(?:\([^)]*\))?\s+)?use\s+)$")


def rewrite_rust(text: str, path: str, own: str | None) -> str:
    """Rewrite `corral_shared::…` (and `crate::…` when `own` is the crate the
    file moved to) paths and use-groups in one file."""
    prefixes = [OLD_IDENT] + (["crate"] if own else [])
    pattern = re.compile(r"(?<![\w$])(" + "|".join(prefixes) + r")::")
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() < pos:
            continue
        old_prefix = m.group(1)
        after = m.end()
        line_no = text.count("\n", 0, m.start()) + 1
        if text.startswith("{", after):
            end = matching_brace(text, after)
            items = [ALIASES.get(i, i) for i in split_top(text[after + 1:end])]
            targets = [target_of(head_of(i)) for i in items]
            if old_prefix == "crate":
                targets = [t if t is not None else own for t in targets]
            if None in targets:
                flag(f"{path}:{line_no}: `{old_prefix}::{{…}}` names an item no mapping covers; left as it was")
                continue
            groups: dict[str, list[str]] = {}
            for item, key in zip(items, targets):
                prefix, rel = rewrite_item(item, key, own)
                groups.setdefault(prefix, []).append(rel)
            if len(groups) == 1:
                (prefix, rels), = groups.items()
                new = join(prefix, "{" + ", ".join(rels) + "}") if len(rels) > 1 else join(prefix, rels[0])
                out.append(text[pos:m.start()] + new)
                pos = end + 1
                continue
            use = USE_BEFORE.search(text, 0, m.start())
            semi = text.find(";", end)
            if not use or use.end() != m.start() or text[end + 1:semi].strip():
                flag(f"{path}:{line_no}: a group spanning crates outside a plain `use`; left as it was")
                continue
            before = text[:use.start(2)].rstrip().splitlines()[-1:] or [""]
            if before[0].strip().startswith("#["):
                flag(f"{path}:{line_no}: an attribute applies to a `use` now split in {len(groups)}: repeat it on each")
            indent, keyword = use.group(2), use.group(3)
            statements = []
            for prefix, rels in groups.items():
                body = "{" + ", ".join(rels) + "}" if len(rels) > 1 else rels[0]
                statements.append(f"{indent}{keyword}{join(prefix, body)};")
            out.append(text[pos:use.start(2)] + "\n".join(statements))
            pos = semi + 1
            continue
        for alias, source in ALIASES.items():
            if old_prefix == OLD_IDENT and re.match(re.escape(alias) + r"(?!\w)", text[after:]):
                text = text[:after] + source + text[after + len(alias):]
        tail = re.match(IDENT + r"(::\{)?", text[after:])
        head = head_of(text[after:])
        key = target_of(head)
        if key is None:
            if old_prefix == OLD_IDENT:
                flag(f"{path}:{line_no}: `{OLD_IDENT}::{head}` is in no crate of the mapping; left as it was")
            continue
        if key == own and old_prefix == "crate" and ROOT_MODULE_CRATES.get(key) != head:
            continue
        root_module = ROOT_MODULE_CRATES.get(key) == head
        if root_module and text.startswith("::", after + len(head)) and not tail.group(1):
            # `corral_shared::payload::x` -> `corral_payload::x`
            prefix = "crate" if key == own else crate_ident(key)
            out.append(text[pos:m.start()] + prefix + "::")
            pos = after + len(head) + 2
            continue
        if root_module and not USE_BEFORE.search(text, 0, m.start()):
            # the module itself, outside a `use` (a doc comment): the crate
            out.append(text[pos:m.start()] + crate_ident(key))
            pos = after + len(head)
            continue
        if tail and tail.group(1):
            end = matching_brace(text, after + len(head) + 2)
            item = text[after:end + 1]
        else:
            item = head
            end = after + len(head) - 1
        prefix, rel = rewrite_item(item, key, own)
        out.append(text[pos:m.start()] + join(prefix, rel))
        pos = end + 1
    out.append(text[pos:])
    return "".join(out)


def expand_name_lists(text: str, path: str) -> str:
    """`"corral_shared",` alone on its line (a list of crate names, as the
    docs test's NOT_METRICS) becomes one line per new crate."""

    def repl(m: re.Match) -> str:
        note(path, f'"{OLD_IDENT}" in a list of names: one line per crate')
        return "\n".join(f'{m.group(1)}"{crate_ident(k)}",' for k in CRATES)

    return re.sub(rf'^([ \t]*)"{OLD_IDENT}",[ \t]*$', repl, text, flags=re.M)


def fix_includes(text: str, old: Path, new: Path, path: str) -> str:
    def repl(m: re.Match) -> str:
        rel = m.group(2)
        if not rel.startswith("."):
            return m.group(0)
        target = os.path.normpath(old.parent / rel)
        fixed = os.path.relpath(target, new.parent)
        return f'{m.group(1)}"{fixed}"'

    text = re.sub(r'(include_(?:str|bytes)!\(\s*)"([^"]+)"', repl, text)
    if "CARGO_MANIFEST_DIR" in text or "#[path" in text:
        flag(f"{path}: uses CARGO_MANIFEST_DIR or #[path]: check the paths after the move")
    return text


# ---------------------------------------------------------------- lib.rs


def write_libs(modules: dict[str, list[Path]], lib: tuple) -> None:
    bullets, decls, reexports = lib
    for key, spec in CRATES.items():
        mods = [m for m in decls if m in modules and MAPPING[m] == key]
        if ROOT_MODULE_CRATES.get(key):
            continue
        text = ["//! " + line if line else "//!" for line in spec["doc"]]
        text += ["//!", "//! # Layout", "//!"]
        for m in mods:
            if m in bullets:
                text += bullets[m]
            elif decls[m][-1].lstrip().startswith("pub"):
                flag(f"{crate_dir(key)}/src/lib.rs: module `{m}` has no bullet in the old crate doc: write one")
        for item, line in reexports:
            if ROOT_ITEMS.get(item) == key and item in bullets:
                text += bullets[item]
        text.append("")
        for m in mods:
            text += decls[m]
        text.append("")
        for item, line in reexports:
            if ROOT_ITEMS.get(item) == key:
                text.append(line)
        body = "\n".join(text).rstrip() + "\n"
        body = re.sub(r"\n\n+(?=\Z)", "\n", body)
        Path(crate_dir(key), "src/lib.rs").write_text(body)
        note(f"{crate_dir(key)}/src/lib.rs", "written: crate doc and module declarations")
    for key, module in ROOT_MODULE_CRATES.items():
        attrs = [a for a in decls.get(module, []) if a.strip().startswith("#[")]
        if attrs:
            note(f"{crate_dir(key)}/src/lib.rs", f"the module's {attrs} became the crate itself")


# ---------------------------------------------------------------- manifests


def section_lines(text: str, section: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line.strip() == f"[{section}]"
            continue
        if inside:
            lines.append(line)
    return lines


def dep_lines(text: str, section: str) -> dict[str, str]:
    deps = {}
    for line in section_lines(text, section):
        m = re.match(r"([A-Za-z0-9_-]+)\s*(=|\.workspace)", line)
        if m:
            deps[m.group(1)] = line
    return deps


def test_split(text: str, test_files: set[str], path: Path) -> tuple[str, str]:
    """(production code, test code) of one file: a file declared
    `#[cfg(test)] mod x;` is all test; otherwise from `#[cfg(test)] mod … {`."""
    if path.stem in test_files:
        return "", text
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return (text[: m.start()], text[m.start():]) if m else (text, "")


def uses_dep(text: str, dep: str) -> bool:
    ident = re.escape(dep.replace("-", "_"))
    return re.search(rf"(?<![\w:])(::)?{ident}(::|!|\s*;|\s+as\b)|\buse\s+{ident}\b", text) is not None


def crate_code(key: str) -> tuple[str, str]:
    prod, test = [], []
    files = sorted(Path(crate_dir(key), "src").rglob("*.rs"))
    test_files = set()
    for f in files:
        test_files |= set(re.findall(r"#\[cfg\(test\)\]\s*mod\s+(\w+)\s*;", f.read_text()))
    for f in files:
        p, t = test_split(f.read_text(), test_files, f)
        prod.append(p)
        test.append(t)
    return "\n".join(prod), "\n".join(test)


def write_manifests(modules: dict[str, list[Path]], old_manifest: str) -> dict[str, list[str]]:
    """Each new crate's Cargo.toml; returns crate key -> its features."""
    old = tomllib.loads(old_manifest)
    deps = dep_lines(old_manifest, "dependencies")
    dev = dep_lines(old_manifest, "dev-dependencies")
    feature_gates = feature_modules()
    package = [l for l in section_lines(old_manifest, "package") if l.strip() and not re.match(r"(name|description)\s*=", l)]
    features_of = {}
    comments = feature_comments(old_manifest)
    for key, spec in CRATES.items():
        prod, test = crate_code(key)
        kept = {f: d for f, d in old.get("features", {}).items()
                if any(MAPPING.get(m) == key for m in feature_gates.get(f, []))
                and not all_modules_of(key, modules) <= set(feature_gates.get(f, []))}
        features_of[key] = list(kept)
        optional = {d.removeprefix("dep:") for ds in kept.values() for d in ds}
        lines = ["[package]", f'name = "{spec["name"]}"', f'description = "{spec["description"]}"'] + package
        lines += ["", "[dependencies]"]
        body, dev_body = [], []
        for other in CRATES:
            if other != key and re.search(rf"\b{crate_ident(other)}::", prod + test):
                body.append(f"{CRATES[other]['name']}.workspace = true")
        for name, line in deps.items():
            if uses_dep(prod, name):
                if name not in optional:
                    line = re.sub(r",\s*optional\s*=\s*true", "", line)
                    line = re.sub(r"^(\S+) = \{ workspace = true \}$", r"\1.workspace = true", line)
                body.append(line)
            elif uses_dep(test, name) and name not in dev:
                dev_body.append(re.sub(r",\s*optional\s*=\s*true", "", line))
        for name, line in dev.items():
            if uses_dep(test, name):
                dev_body.append(line)
        lines += sorted(body, key=lambda l: l.split("=")[0].split(".")[0].strip())
        if dev_body:
            lines += ["", "[dev-dependencies]"] + dev_body
        if kept:
            lines += ["", "[features]"]
            for f, ds in kept.items():
                ds = [d for d in ds if d.removeprefix("dep:") in deps and uses_dep(prod, d.removeprefix("dep:"))]
                lines += comments.get(f, [])
                one_line = f"{f} = [" + ", ".join(f'"{d}"' for d in ds) + "]"
                lines += [one_line] if len(one_line) <= 100 else [f"{f} = ["] + [f'    "{d}",' for d in ds] + ["]"]
        lines += ["", "[lints]", "workspace = true", ""]
        Path(crate_dir(key), "Cargo.toml").write_text("\n".join(lines))
        note(f"{crate_dir(key)}/Cargo.toml", "written: dependencies found in its code, features that gate its modules")
    return features_of


def all_modules_of(key: str, modules: dict[str, list[Path]]) -> set[str]:
    return {m for m in modules if MAPPING[m] == key}


def feature_modules() -> dict[str, list[str]]:
    """Feature -> the modules the old lib.rs gated with it."""
    gates: dict[str, list[str]] = {}
    _, decls, _ = OLD_LIB
    for module, lines in decls.items():
        for line in lines:
            for f in re.findall(r'feature\s*=\s*"([^"]+)"', line):
                gates.setdefault(f, []).append(module)
    return gates


def feature_comments(manifest: str) -> dict[str, list[str]]:
    comments, pending = {}, []
    for line in section_lines(manifest, "features"):
        if line.startswith("#"):
            pending.append(line)
            continue
        m = re.match(r"([A-Za-z0-9_-]+)\s*=", line)
        if m:
            comments[m.group(1)] = pending
        if line.strip():
            pending = []
    return comments


def members() -> list[str]:
    return tomllib.loads(Path("Cargo.toml").read_text())["workspace"]["members"]


def rewrite_dependents(features_of: dict[str, list[str]]) -> None:
    gone = {f: k for f, mods in feature_modules().items() for k in CRATES
            if ROOT_MODULE_CRATES.get(k) in mods}
    for member in members():
        manifest = Path(member, "Cargo.toml")
        if member == OLD_DIR or not manifest.exists():
            continue
        text = manifest.read_text()
        if OLD_NAME not in text:
            continue
        code = "\n".join(p.read_text() for p in Path(member).rglob("*.rs") if "target" not in p.parts)
        used = sorted((k for k in CRATES if re.search(rf"\b{crate_ident(k)}\b", code)), key=lambda k: CRATES[k]["name"])
        lines = []
        for line in text.splitlines():
            m = re.match(rf"{OLD_NAME}\s*(=|\.workspace)", line)
            if m:
                asked = re.findall(r'"([^"]+)"', line.split("features", 1)[1]) if "features" in line else []
                optional = "optional = true" in line
                for f in asked:
                    if f in gone and gone[f] not in used:
                        note(str(manifest), f"feature `{f}` dropped: its code names nothing of {CRATES[gone[f]]['name']}")
                for k in used:
                    fs = [f for f in asked if f in features_of[k]]
                    attrs = (["features = [" + ", ".join(f'"{f}"' for f in fs) + "]"] if fs else []) + (["optional = true"] if optional else [])
                    lines.append(f"{CRATES[k]['name']} = {{ workspace = true, {', '.join(attrs)} }}" if attrs
                                 else f"{CRATES[k]['name']}.workspace = true")
                for f in asked:
                    if f not in gone and not any(f in features_of[k] for k in used):
                        flag(f"{manifest}: feature `{f}` of {OLD_NAME} has no crate its code uses: dropped")
                continue

            def feature_ref(fm: re.Match) -> str:
                f = fm.group(1)
                owner = [k for k in used if f in features_of[k]]
                if not owner:
                    flag(f"{manifest}: `{OLD_NAME}/{f}` in a feature list: no used crate has feature {f}; left as it was")
                    return fm.group(0)
                return f'"{CRATES[owner[0]]["name"]}/{f}"'

            lines.append(re.sub(rf'"{OLD_NAME}/([A-Za-z0-9_-]+)"', feature_ref, line))
        manifest.write_text("\n".join(sort_runs(lines)) + "\n")
        note(str(manifest), f"{OLD_NAME} -> " + ", ".join(CRATES[k]["name"] for k in used))


def sort_runs(lines: list[str]) -> list[str]:
    """Runs of dependency lines that were in name order (the new crates
    aside) are put back in name order."""
    dep = re.compile(r"[A-Za-z0-9_-]+\s*(=|\.workspace)")
    names = {CRATES[k]["name"] for k in CRATES}
    out, run_, section = [], [], ""

    def flush() -> None:
        keys = [l.split("=")[0].split(".")[0].strip() for l in run_]
        old = [k for k in keys if k not in names]
        out.extend(sorted(run_, key=lambda l: l.split("=")[0].split(".")[0].strip()) if old == sorted(old) else run_)
        run_.clear()

    for line in lines:
        if line.startswith("["):
            section = line.strip()
        if section.endswith("dependencies]") and dep.match(line):
            run_.append(line)
            continue
        flush()
        out.append(line)
    flush()
    return out


def rewrite_workspace() -> None:
    text = Path("Cargo.toml").read_text()
    new_members = "\n".join(f'    "{crate_dir(k)}",' for k in CRATES)
    text, n = re.subn(rf'^    "{OLD_DIR}",$', new_members, text, flags=re.M)
    paths = "\n".join(f'{CRATES[k]["name"]} = {{ path = "{crate_dir(k)}" }}' for k in CRATES)
    text, m = re.subn(rf'^{OLD_NAME} = \{{ path = "{OLD_DIR}" \}}$', paths, text, flags=re.M)
    if n != 1 or m != 1:
        flag(f"Cargo.toml: members ({n}) or [workspace.dependencies] ({m}) entry of {OLD_NAME} not found once")
    Path("Cargo.toml").write_text(text)
    note("Cargo.toml", "workspace members and [workspace.dependencies]")


# ---------------------------------------------------------------- other text


def rewrite_text_files(moved_from: dict[str, str], module_dirs: dict[str, str]) -> None:
    files = run("git", "ls-files").splitlines()
    for path in files:
        if path.endswith(".rs") or path.endswith("Cargo.toml") or path.startswith(TEXT_SKIP):
            continue
        p = Path(path)
        if not p.is_file():
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        new = text

        def file_path(m: re.Match) -> str:
            old = m.group(0)
            if old in moved_from:
                return moved_from[old]
            module = old.split("/")[2].removesuffix(".rs") if old.count("/") >= 2 else ""
            if module in module_dirs:
                return module_dirs[module] + old[len(f"{OLD_DIR}/src/{module}"):]
            flag(f"{path}: `{old}` names no moved file; left as it was")
            return old

        new = re.sub(rf"(?<![\w/.]){OLD_DIR}/src/[A-Za-z0-9_./]*[A-Za-z0-9_]", file_path, new)
        new = re.sub(rf'"{OLD_DIR}/src"', f'"{OLD_DIR}"', new)
        new = re.sub(rf"(?<![\w-]){OLD_NAME}::", f"{OLD_IDENT}::", new)
        new = rewrite_rust(new, path, None) if OLD_IDENT + "::" in new else new
        new = rewrite_commands(new, path)
        for before, after in PROSE.get(path, []):
            if before in new:
                new = new.replace(before, after)
            else:
                flag(f"{path}: PROSE text not found, reword by hand: {before.strip()[:80]!r}")
        if new != text:
            p.write_text(new)
            note(path, "paths under shared/src, corral_shared:: paths, -p corral-shared")
        for i, line in enumerate(new.splitlines(), 1):
            crate_name = OLD_NAME in line and not path.startswith("deploy/") and "ConfigMap" not in line
            if crate_name or OLD_IDENT in line or re.search(rf"(?<![\w/.]){OLD_DIR}/src\b", line):
                flag(f"{path}:{i}: still names {OLD_NAME}/shared/src (prose to reword by hand): {line.strip()[:100]}")


def rewrite_commands(text: str, path: str) -> str:
    """`-p corral-shared --features f` (in docs and doc comments alike)."""
    return re.sub(rf"-p {OLD_NAME} --features ([a-z_-]+)", lambda m: crate_for_feature(m, path), text)


def crate_for_feature(m: re.Match, path: str) -> str:
    f = m.group(1)
    for key, module in ROOT_MODULE_CRATES.items():
        if f in feature_modules() and module in feature_modules()[f]:
            return f"-p {CRATES[key]['name']}"
    owners = [k for k, mods in [(k, all_modules_of(k, MODULES)) for k in CRATES]
              if set(feature_modules().get(f, [])) & mods]
    if owners:
        return f"-p {CRATES[owners[0]]['name']} --features {f}"
    flag(f"{path}: `{m.group(0)}`: feature {f} belongs to no crate; left as it was")
    return m.group(0)


# ---------------------------------------------------------------- main

OLD_LIB: tuple = ({}, {}, [])
MODULES: dict[str, list[Path]] = {}


def main() -> int:
    global OLD_LIB, MODULES
    root = Path(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else Path.cwd()
    os.chdir(root)
    modules, lib = preflight()
    OLD_LIB, MODULES = lib, modules
    if "--check" in sys.argv:
        for m, files in modules.items():
            print(f"{m:10} -> {CRATES[MAPPING[m]]['name']:16} ({len(files)} files)")
        return 0
    old_manifest = Path(OLD_DIR, "Cargo.toml").read_text()
    moved = move(modules)
    run("git", "rm", "-q", f"{OLD_DIR}/src/lib.rs", f"{OLD_DIR}/Cargo.toml")
    for folder in sorted(Path(OLD_DIR, "src").rglob("*"), key=lambda p: -len(p.parts)) + [Path(OLD_DIR, "src")]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    for new, (module, old) in moved.items():
        text = new.read_text()
        out = rewrite_rust(text, str(new), MAPPING[module])
        out = rewrite_commands(fix_includes(out, old, new, str(new)), str(new))
        if out != text:
            new.write_text(out)
            note(str(new), "moved; crate:: paths and include paths")
        else:
            note(str(new), "moved")
    write_libs(modules, lib)
    for path in run("git", "ls-files", "*.rs").splitlines():
        p = Path(path)
        if path.startswith(OLD_DIR + "/") or not p.exists():
            continue
        text = p.read_text()
        if OLD_IDENT in text or OLD_NAME in text:
            p.write_text(rewrite_commands(expand_name_lists(rewrite_rust(text, path, None), path), path))
            note(path, "corral_shared paths")
    features_of = write_manifests(modules, old_manifest)
    rewrite_workspace()
    rewrite_dependents(features_of)
    moved_from = {str(old): str(new) for new, (_, old) in moved.items()}
    module_dirs = {}
    for m in modules:
        key = MAPPING[m]
        base = f"{crate_dir(key)}/src"
        module_dirs[m] = base if ROOT_MODULE_CRATES.get(key) == m else f"{base}/{m}"
    rewrite_text_files(moved_from, module_dirs)
    if not check_graph():
        report()
        return 1
    for command in (["cargo", "update", "--workspace", "--offline"], ["cargo", "fmt", "--all"]):
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            flag(f"`{' '.join(command)}` failed:\n{out.stderr}")
    run("git", "add", "-A", OLD_DIR, "Cargo.lock")
    for path in run("git", "ls-files", "*.rs", "*.toml").splitlines():
        text = Path(path).read_text() if Path(path).exists() else ""
        for i, line in enumerate(text.splitlines(), 1):
            if OLD_IDENT in line or OLD_NAME in line:
                flag(f"{path}:{i}: still names {OLD_NAME}: {line.strip()[:100]}")
    report()
    return 1 if human else 0


def check_graph() -> bool:
    """Prints which new crate depends on which; false on a cycle."""
    edges = {}
    for key in CRATES:
        prod, test = crate_code(key)
        edges[key] = {o for o in CRATES if o != key and re.search(rf"\b{crate_ident(o)}::", prod + test)}
    for key, outs in edges.items():
        print(f"split-shared: {CRATES[key]['name']} depends on {sorted(CRATES[o]['name'] for o in outs) or 'no corral crate'}")
    cycles = [(a, b) for a, outs in edges.items() for b in outs if a < b and a in edges[b]]
    for a, b in cycles:
        flag(f"{CRATES[a]['name']} and {CRATES[b]['name']} name each other (a cycle cargo refuses): "
             f"move a module in MAPPING; the work tree is left as split so far (git reset --hard to retry)")
    return not cycles


def report() -> None:
    print("split-shared: changed")
    for path in sorted(changed):
        print(f"  {path}: {'; '.join(dict.fromkeys(changed[path]))}")
    if human:
        print("split-shared: NEEDS A HUMAN")
        for h in human:
            print(f"  {h}")


if __name__ == "__main__":
    sys.exit(main())
