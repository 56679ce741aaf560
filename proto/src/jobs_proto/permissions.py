"""What each service may publish and subscribe to on NATS, as data, from one subject prefix and
one jobs stream name; the test servers, `make run` and `deploy/` all render their users from it.

Each service gets its own reply inbox (`_INBOX_<service>.>`), so no service can read another's
replies, and JetStream API rights name the streams and consumers it really uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from jobs_proto.base import Message
from jobs_proto.subjects import Subjects

SERVICES: Final = ("gateway", "webhook-ingest", "ai-runner", "job-store")
# `jobsctl`'s user: deploy/ ships it beside the services', with a password of its own.
OPERATOR: Final = "ops"

_API: Final = "$JS.API"
# The account's JetStream info: answered only where the cluster's meta leader is reachable, so
# every service asks it to tell a NATS node cut off from its cluster (jobs_runtime.nodes).
NODE_PROBE: Final = f"{_API}.INFO"


class Permissions(Message, frozen=True):
    """One NATS user's allow lists; anything not listed is refused by the server."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # The job-store answers requests: the server lets it publish to the reply subject of a
    # request it received, and nowhere else in `_INBOX_*`.
    allow_responses: bool = False


class NatsUser(Message, frozen=True):
    """A user of the server config; `password` is either the secret or a `$VARIABLE` the
    server reads from its environment (deploy/)."""

    user: str
    password: str
    permissions: Permissions


def inbox_prefix(service: str) -> str:
    """The reply-subject prefix a service connects with (nats-py `inbox_prefix`)."""
    return f"_INBOX_{service}"


# The bucket names are the services' own (`<JOBS>_IDEMPOTENCY` in the gateway, `<JOBS>_CLAIMS`
# and `<JOBS>_LIMITS` in the ai-runner, `<JOBS>_RESULTS` in the runtime); tests/security checks
# that they still agree with these.
def idempotency_bucket(jobs_stream: str) -> str:
    return f"{jobs_stream}_IDEMPOTENCY"


def claims_bucket(jobs_stream: str) -> str:
    return f"{jobs_stream}_CLAIMS"


def limits_bucket(jobs_stream: str) -> str:
    return f"{jobs_stream}_LIMITS"


def results_bucket(jobs_stream: str) -> str:
    return f"{jobs_stream}_RESULTS"


def _declares(stream: str) -> tuple[str, ...]:
    """Create (or bring up to date) and inspect a stream; never purge or delete it."""
    return tuple(f"{_API}.STREAM.{op}.{stream}" for op in ("CREATE", "UPDATE", "INFO"))


def _key_value(bucket: str) -> tuple[str, ...]:
    """Open, create (or bring to its replicas and limits), read and write one KV bucket (its
    stream is `KV_<bucket>`)."""
    stream = f"KV_{bucket}"
    return (
        f"{_API}.STREAM.CREATE.{stream}",
        f"{_API}.STREAM.UPDATE.{stream}",
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"$KV.{bucket}.>",
    )


def _object_store_writer(bucket: str) -> tuple[str, ...]:
    """Open, create (or bring to its replicas and limits) and put into one object store; a put
    over an object purges its old chunks."""
    stream = f"OBJ_{bucket}"
    return (
        f"{_API}.STREAM.CREATE.{stream}",
        f"{_API}.STREAM.UPDATE.{stream}",
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.STREAM.PURGE.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"$O.{bucket}.>",
    )


def _object_store_reader(bucket: str) -> tuple[str, ...]:
    """Open and get from one object store: a get reads chunks through an ordered consumer
    (created, flow-controlled, deleted) into the reader's own inbox, after looking up which
    stream holds the chunks' subject (`STREAM.NAMES`: names only, no contents)."""
    stream = f"OBJ_{bucket}"
    return (
        f"{_API}.STREAM.NAMES",
        f"{_API}.STREAM.CREATE.{stream}",
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    )


def _output_writer(subjects: Subjects, output: str) -> tuple[str, ...]:
    """Declare the output log, read one prediction's last chunk and append after it."""
    return (
        f"{subjects.prefix}job_output.*.*",
        *_declares(output),
        f"{_API}.DIRECT.GET.{output}",
        f"{_API}.DIRECT.GET.{output}.>",
    )


def _pull_consumer(stream: str, durable: str) -> tuple[str, ...]:
    """Declare, inspect, fetch from and acknowledge one durable pull consumer."""
    return (
        f"{_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


def service_permissions(subjects: Subjects, jobs_stream: str = "JOBS") -> dict[str, Permissions]:
    """Each service's allow lists under `subjects`' prefix, for the stream named `jobs_stream`
    and the parked stream, consumers and buckets named after it."""
    parked = f"{jobs_stream}_PARKED"
    output = f"{jobs_stream}_OUTPUT"
    p = subjects.prefix
    # What every service does through the runtime: declare the jobs stream at start-up and
    # receive its replies (JetStream acks and API answers, request/reply) in its own inbox.
    gateway = Permissions(
        publish=(
            NODE_PROBE,
            f"{p}job.requested.*",
            f"{p}job.cancel_requested.*",
            subjects.get_job,
            subjects.list_jobs,
            subjects.job_history,
            # The resync of open streams: which watched jobs changed unannounced.
            subjects.job_versions,
            # Budgets: reserve at admission, release when the publish failed, usage.
            subjects.reserve_budget,
            subjects.release_budget,
            subjects.usage,
            *_declares(jobs_stream),
            # Whether a job was admitted: the last `requested` of one job id.
            f"{_API}.STREAM.MSG.GET.{jobs_stream}",
            *_key_value(idempotency_bucket(jobs_stream)),
            # `/output` reads a prediction's log from its start: an ordered consumer over one
            # subject (created, flow-controlled, deleted), and direct gets.
            *_declares(output),
            f"{_API}.CONSUMER.CREATE.{output}",
            f"{_API}.CONSUMER.CREATE.{output}.>",
            f"{_API}.CONSUMER.DELETE.{output}.*",
            f"{_API}.DIRECT.GET.{output}",
            f"{_API}.DIRECT.GET.{output}.>",
            f"$JS.FC.{output}.>",
            # A client reads a running job's text: the relay reads its stream while one does.
            f"{p}job_output_wanted.*",
        ),
        subscribe=(
            f"{inbox_prefix('gateway')}.>",
            subjects.all_job_changes,
            subjects.all_progress,
            # New chunks as they are stored, live to every open `/output`.
            subjects.all_output,
        ),
    )
    webhook_ingest = Permissions(
        publish=(
            NODE_PROBE,
            f"{p}job.started.*",
            f"{p}job.completed.*",
            f"{p}job_progress.*",
            f"{p}job_parked.*",
            *_declares(jobs_stream),
            *_declares(parked),
            *_object_store_writer(results_bucket(jobs_stream)),
            # The text of `output` webhooks, for models that do not stream (or whose stream
            # failed): appended to the log where the relay has not written it yet.
            *_output_writer(subjects, output),
        ),
        subscribe=(f"{inbox_prefix('webhook-ingest')}.>",),
    )
    ai_runner = Permissions(
        publish=(
            NODE_PROBE,
            f"{p}job.submitted.*",
            f"{p}job.failed.*",
            # What it learns by polling a prediction whose webhook never came: that it started
            # (polling mode has no `start` webhook), and its end.
            f"{p}job.started.*",
            f"{p}job.completed.*",
            subjects.stuck_jobs,
            *_declares(jobs_stream),
            f"{_API}.STREAM.MSG.GET.{jobs_stream}",
            *_pull_consumer(jobs_stream, "ai-runner"),
            *_pull_consumer(jobs_stream, "ai-runner-cancels"),
            *_pull_consumer(jobs_stream, "ai-runner-started"),
            # The relay: submitted predictions whose model streams, into the output log.
            *_pull_consumer(jobs_stream, "ai-runner-relay"),
            *_output_writer(subjects, output),
            # The relay's progress of each stream (streaming types get no `output` webhooks).
            f"{p}job_progress.*",
            *_key_value(claims_bucket(jobs_stream)),
            *_key_value(limits_bucket(jobs_stream)),
            *_object_store_writer(results_bucket(jobs_stream)),
        ),
        subscribe=(
            f"{inbox_prefix('ai-runner')}.>",
            # Ends going by on the bus free in-flight slots early.
            subjects.kind("completed"),
            subjects.kind("failed"),
            # Which running jobs' text a client reads: the relay reads those streams.
            subjects.all_output_wanted,
        ),
    )
    job_store = Permissions(
        publish=(
            NODE_PROBE,
            f"{p}job.purged.*",
            f"{p}job_change.*",
            f"{p}job_parked.*",
            *_declares(jobs_stream),
            *_declares(parked),
            *_pull_consumer(jobs_stream, "job-store"),
            # `job-store replay` reads the whole stream through an ephemeral consumer.
            f"{_API}.CONSUMER.CREATE.{jobs_stream}",
            f"{_API}.CONSUMER.CREATE.{jobs_stream}.>",
            f"{_API}.CONSUMER.INFO.{jobs_stream}.*",
            f"{_API}.CONSUMER.DELETE.{jobs_stream}.*",
            f"{_API}.CONSUMER.MSG.NEXT.{jobs_stream}.*",
            f"$JS.ACK.{jobs_stream}.>",
            *_object_store_reader(results_bucket(jobs_stream)),
        ),
        subscribe=(
            f"{inbox_prefix('job-store')}.>",
            subjects.request("job-store", "*"),
            # The `nats.micro` discovery endpoints (PING, INFO, STATS).
            "$SRV.>",
        ),
        allow_responses=True,
    )
    return {
        "gateway": gateway,
        "webhook-ingest": webhook_ingest,
        "ai-runner": ai_runner,
        "job-store": job_store,
    }


def ops_permissions(subjects: Subjects, jobs_stream: str = "JOBS") -> Permissions:
    """`jobsctl`'s user: reads the job-store as its callers do, reads any stream's and
    consumer's state, a job's events and the dead letters through ordered consumers, and
    replays a dead letter (publish a job event, delete the parked copy). It never purges or
    deletes a stream, deletes a consumer (its ordered consumers expire by themselves), or
    takes a service's messages. deploy/ ships it as `OPERATOR` beside the services' users
    (see deploy/README.md, "Operator's command")."""
    parked = f"{jobs_stream}_PARKED"
    p = subjects.prefix

    def ordered_reader(stream: str) -> tuple[str, ...]:
        return (
            f"{_API}.CONSUMER.CREATE.{stream}",
            f"{_API}.CONSUMER.CREATE.{stream}.>",
            f"$JS.FC.{stream}.>",
        )

    return Permissions(
        publish=(
            subjects.get_job,
            subjects.job_history,
            subjects.stuck_jobs,
            # Replay: a parked event back to the subject it was bound for.
            f"{p}job.*.*",
            # Health: every stream's and consumer's state (names, sizes, replicas, lag).
            f"{_API}.STREAM.LIST",
            f"{_API}.STREAM.NAMES",
            f"{_API}.STREAM.INFO.*",
            f"{_API}.CONSUMER.LIST.*",
            f"{_API}.CONSUMER.INFO.*.*",
            *ordered_reader(jobs_stream),
            *ordered_reader(parked),
            f"{_API}.STREAM.MSG.DELETE.{parked}",
        ),
        subscribe=(f"{inbox_prefix('ops')}.>",),
    )


def _strings(values: tuple[str, ...]) -> str:
    # JSON strings are valid NATS config strings, and quoted ones are never read as `$VARIABLE`s.
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _password(password: str) -> str:
    # A `$VARIABLE` stays unquoted so the server substitutes it from its environment.
    if password.startswith("$"):
        return password
    return json.dumps(password)


def render_users(users: list[NatsUser], indent: str = "    ") -> str:
    """The `users = [...]` entries of a server's `authorization` block."""
    lines = []
    for u in users:
        perms = u.permissions
        lines += [
            f"{indent}{{",
            f"{indent}  user: {json.dumps(u.user)}",
            f"{indent}  password: {_password(u.password)}",
            f"{indent}  permissions: {{",
            f"{indent}    publish: {{ allow: {_strings(perms.publish)} }}",
            f"{indent}    subscribe: {{ allow: {_strings(perms.subscribe)} }}",
        ]
        if perms.allow_responses:
            lines.append(f"{indent}    allow_responses: true")
        lines += [f"{indent}  }}", f"{indent}}}"]
    return "\n".join(lines)


def service_users(
    subjects: Subjects, jobs_stream: str, passwords: Mapping[str, str], user_prefix: str = ""
) -> list[NatsUser]:
    """One user per service, named `<user_prefix><service>`, with its password from
    `passwords` (keyed by service)."""
    return [
        NatsUser(user=f"{user_prefix}{service}", password=passwords[service], permissions=perms)
        for service, perms in service_permissions(subjects, jobs_stream).items()
    ]


def password_variable(service: str) -> str:
    """The NATS server's environment variable holding a service's password (deploy/)."""
    return f"{service.upper().replace('-', '_')}_NATS_PASSWORD"


def render_deploy_authorization() -> str:
    """`deploy/base/nats/users.conf`: the production users (no prefix, stream `JOBS`), their
    passwords read by the server from its environment (the `nats-users` Secret)."""
    passwords = {service: f"${password_variable(service)}" for service in SERVICES}
    users = service_users(Subjects(""), "JOBS", passwords)
    operator = NatsUser(
        user=OPERATOR,
        password=f"${password_variable(OPERATOR)}",
        permissions=ops_permissions(Subjects(""), "JOBS"),
    )
    return "\n".join(
        [
            "# Generated by `make nats-users` from proto/src/jobs_proto/permissions.py: edit that.",
            "# A user per service and one for `jobsctl`, each allowed only the subjects it needs;",
            "# no anonymous access.",
            "authorization {",
            "  users = [",
            render_users([*users, operator]),
            "  ]",
            "}",
            "",
        ]
    )


if __name__ == "__main__":
    import sys
    from pathlib import Path

    Path(sys.argv[1]).write_text(render_deploy_authorization())
