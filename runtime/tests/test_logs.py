import json
import logging

from jobs_runtime.logs import JsonFormatter


def test_a_record_is_one_json_object_with_its_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "ai_runner",
            "levelname": "WARNING",
            "msg": "retrying %s",
            "args": ("p1",),
            "job_id": "j-1",
        }
    )
    line = JsonFormatter("ai-runner").format(record)
    entry = json.loads(line)
    assert entry["service"] == "ai-runner"
    assert entry["level"] == "warning"
    assert entry["msg"] == "retrying p1"
    assert entry["job_id"] == "j-1"
    assert entry["ts"].endswith("+00:00")
    assert "\n" not in line


def test_exceptions_are_kept_inside_the_object() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    entry = json.loads(JsonFormatter("job-store").format(record))
    assert "ValueError: boom" in entry["exc"]
