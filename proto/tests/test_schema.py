from pathlib import Path

from jobs_proto import schema
from jobs_proto.events import EVENT_KINDS

COMMITTED = Path(__file__).parents[1] / "schema" / "jobs.schema.json"


def test_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == schema.render(), (
        "proto/schema is stale: run `make schema`"
    )


def test_schema_describes_every_event_and_body() -> None:
    doc = schema.document()
    defs = doc["$defs"]
    for kind, event_type in EVENT_KINDS.items():
        assert defs[event_type.__name__]["properties"]["kind"]["enum"] == [kind]
    for name in ("JobView", "JobPage", "Problem", "ScriptGenerationInput", "CreateJob"):
        assert name in defs
    assert len(doc["anyOf"]) == len(EVENT_KINDS)
