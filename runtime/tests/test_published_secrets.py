"""`PUBLISHED` stays honest: every secret value the repository's tracked files assign to a
secret's name (dev defaults, manifests, docs, examples) is listed there, so prod refuses it.

Adding an example secret anywhere without listing it fails here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from jobs_runtime.secrets import PUBLISHED, SecretKind, secret_parts

ROOT = Path(__file__).resolve().parents[2]
# Where dev defaults and examples live; tests' own values are random or listed by the
# `whsec_` rule below.
SCANNED = re.compile(
    r"^(deploy/|docs/|clients/|README\.md$|(services/[^/]+|runtime|simulator|testkit)/src/)"
)
# Third-party files vendored as they are published (Swagger UI's minified bundle): their
# `password:` is code, not a value of ours.
VENDORED = re.compile(r"/static/swagger-ui/")
SECRET_NAME = r"\w*(?:secret|token|password|database_url)"
# Python: `replicate_api_token: Secret = "..."`, `DEV_JWT_SECRET: Final = "..."`, and the keys
# of dict literals, `"AUTH_JWT_SECRET": "..."`; not a prefix others are added to (`"r8_" + ...`).
PYTHON_ASSIGNMENT = re.compile(
    rf"""\b(?P<name>{SECRET_NAME})["']?[ \t]*(?::[^=\n]*)?[=:][ \t]*"""
    r"""(?P<q>["'])(?P<value>[^"'\n]*)(?P=q)(?![ \t]*\+)""",
    re.IGNORECASE,
)
# YAML, env files, shell and Markdown: `NAME=value`, `NAME: value`, `--from-literal=NAME=value`.
TEXT_ASSIGNMENT = re.compile(
    rf"""\b(?P<name>{SECRET_NAME})["']?[ \t]*[=:][ \t]*["']?(?P<value>[^\s"'`)}}|]*)""",
    re.IGNORECASE,
)
# A webhook signing key looks like one wherever it is written, tests included.
WEBHOOK_KEY = re.compile(r"whsec_[A-Za-z0-9+/=]{8,}")
# Not values but blanks for the reader to fill: `...`, `$(command)`, `<token>`, `{name}`; or
# code in a Markdown example, `token: () => session.getAccessToken()`.
PLACEHOLDER = re.compile(r"\.\.\.|[$<>{(]")
# JavaScript and TypeScript: a string literal given to a secret's name, `token: "..."`,
# `const secret = '...'` (no annotation: `a: "x", b: "y"` is an object, not a typed name).
SCRIPT_ASSIGNMENT = re.compile(
    rf"""\b(?P<name>{SECRET_NAME})["']?[ \t]*[=:][ \t]*"""
    r"""(?P<q>["'])(?P<value>[^"'\n]*)(?P=q)(?![ \t]*\+)""",
    re.IGNORECASE,
)
SCRIPTS = (".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx")


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [name for name in listed.split("\0") if name]


def text_of(name: str) -> str | None:
    try:
        return (ROOT / name).read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError):
        return None  # binary (PNG) or deleted in the working tree


def assigned_secrets(name: str, text: str) -> set[str]:
    """The secret values `text` (the file `name`) assigns to secret-looking names."""
    if name.endswith(".py"):
        pattern = PYTHON_ASSIGNMENT
    elif name.endswith(SCRIPTS):
        pattern = SCRIPT_ASSIGNMENT
    else:
        pattern = TEXT_ASSIGNMENT
    found: set[str] = set()
    for match in pattern.finditer(text):
        value = match["value"].rstrip(",;")  # a list's or a statement's end
        if not value or PLACEHOLDER.search(value):
            continue  # empty, or a blank to fill
        if re.fullmatch(r"[A-Za-z_][\w.]*", value) and not value.startswith(("whsec_", "r8_")):
            continue  # a name: a type, a constant, a Secret's name or key
        kind: SecretKind = "url" if "://" in value else "plain"
        found.update(secret_parts(kind, value))
    return found


def repository_secrets() -> dict[str, set[str]]:
    """Each secret value found, and the files it is in."""
    where: dict[str, set[str]] = {}
    for name in tracked_files():
        text = text_of(name)
        if text is None:
            continue
        values = set(WEBHOOK_KEY.findall(text))
        if SCANNED.match(name) and not VENDORED.search(name):
            values |= assigned_secrets(name, text)
        for value in values:
            where.setdefault(value, set()).add(name)
    return where


def test_the_scanner_finds_each_form_of_assignment() -> None:
    python = 'token: Secret = "py-token"\nDEV_X_SECRET: Final = "py-constant"\n'
    python += 'env = {"AUTH_JWT_SECRET": "py-dict"}\nauth_jwt_secret = DEV_JWT_SECRET\n'
    python += 'OPERATOR = {"REPLICATE_API_TOKEN": "r8_" + secrets.token_hex(20)}\n'
    assert assigned_secrets("config.py", python) == {"py-token", "py-constant", "py-dict"}
    text = "- AUTH_JWT_SECRET=env-literal\nREPLICATE_API_TOKEN: yaml-value\n"
    text += "--from-literal=DATABASE_URL=postgresql://jobs:url-password@db/jobs\n"
    text += "- name: AUTH_JWT_SECRET\n  key: REPLICATE_API_TOKEN\n"
    text += "AUTH_JWT_SECRET=... make run; REPLICATE_WEBHOOK_SECRET=$(fetch-secret)\n"
    text += "REPLICATE_API_TOKEN=r8_<yours> and REPLICATE_WEBHOOK_SECRET=a-1,b-2\n"
    assert assigned_secrets("kustomization.yaml", text) == {
        "env-literal",
        "yaml-value",
        "url-password",
        "a-1",
        "b-2",
    }


def test_every_secret_the_repository_assigns_is_published() -> None:
    found = repository_secrets()
    # The dev defaults at least: an empty scan would pass for the wrong reason.
    assert {"dev-only-jwt-secret", "dev-only-replicate-token"} <= set(found)
    unlisted = {value: sorted(files) for value, files in found.items() if value not in PUBLISHED}
    assert not unlisted, f"add these to jobs_runtime.secrets.PUBLISHED: {unlisted}"
