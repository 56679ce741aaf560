"""`make dev-secrets`: random secrets for the dev cluster, one env file per Secret that
`deploy/overlays/dev` generates, in a folder git ignores.

`python -m jobs_testkit.cluster_secrets [folder]` writes them once and keeps them after: the
in-cluster Postgres keeps the password it was first started with.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from jobs_testkit.stack import DevSecrets

FOLDER = Path(__file__).resolve().parents[3] / "deploy" / "overlays" / "dev" / "secrets"


def secret_files() -> dict[str, dict[str, str]]:
    """Fresh values, by Secret name: the simulator signs with the webhook secret webhook-ingest
    verifies, and the job-store's URL carries the password Postgres is started with."""
    shared = DevSecrets()
    password = secrets.token_urlsafe(24)
    return {
        "gateway-auth": {
            "AUTH_JWT_SECRET": shared.jwt_secret,
            "JOB_TOKEN_SECRET": shared.job_token_secret,
        },
        "replicate-api": {"REPLICATE_API_TOKEN": shared.replicate_token},
        "replicate-webhook": {"REPLICATE_WEBHOOK_SECRET": shared.webhook_secret},
        "postgres": {"POSTGRES_PASSWORD": password},
        "job-store-database": {"DATABASE_URL": f"postgresql://jobs:{password}@postgres:5432/jobs"},
        # Each service's NATS password, keyed as the nats-users Secret is read.
        "nats-users": dict(shared.nats_passwords),
    }


def write(folder: Path) -> bool:
    """Write every file unless all exist already (then keep them, adding only keys a newer
    release asks for, such as a new NATS user's password); True if anything was written."""
    files = secret_files()
    paths = {name: folder / f"{name}.env" for name in files}
    if all(path.exists() for path in paths.values()):
        return _add_missing_keys(paths, files)
    # A partial set is rewritten whole: its files must agree with each other.
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in files.items():
        paths[name].touch(mode=0o600)
        paths[name].write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return True


def _add_missing_keys(paths: dict[str, Path], files: dict[str, dict[str, str]]) -> bool:
    # Only independent values are ever added (a password of its own); the ones Postgres was
    # started with stay as they are.
    added = False
    for name, values in files.items():
        text = paths[name].read_text()
        present = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line}
        missing = {key: value for key, value in values.items() if key not in present}
        if missing:
            if text and not text.endswith("\n"):
                text += "\n"
            paths[name].write_text(text + "".join(f"{k}={v}\n" for k, v in missing.items()))
            added = True
    return added


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else FOLDER
    if write(folder):
        print(f"dev cluster secrets written to {folder}")
    else:
        print(f"dev cluster secrets kept in {folder} (delete it to make new ones)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
