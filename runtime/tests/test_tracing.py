"""Tracing off costs nothing and changes nothing; on, spans reach an OTLP receiver with their
parent links, context crosses headers and a bare traceparent, and log lines carry the ids."""

import json
import logging
from collections.abc import Iterator

import pytest

from jobs_runtime import tracing
from jobs_runtime.logs import JsonFormatter
from jobs_runtime.settings import ServiceSettings, SettingsError, load_settings
from jobs_testkit.otlp import OtlpReceiver, running_otlp_receiver

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _log_entry() -> dict[str, object]:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": "m"})
    entry: dict[str, object] = json.loads(JsonFormatter("svc").format(record))
    return entry


def test_off_without_an_endpoint_every_hook_is_a_no_op() -> None:
    assert tracing.start("svc", "") is False
    assert tracing.ENABLED is False
    # One shared do-nothing context manager: no allocation per call on a hot path.
    assert tracing.span("a") is tracing.span("b", kind="consumer")
    with tracing.span("a"):
        assert tracing.traceparent() is None
        assert tracing.log_ids() is None
        assert tracing.current() is None
    headers = {"Nats-Msg-Id": "x"}
    assert tracing.inject(headers) == {"Nats-Msg-Id": "x"}
    assert tracing.extract({"traceparent": TRACEPARENT}) is None
    assert tracing.from_traceparent(TRACEPARENT) is None
    assert tracing.extract_asgi([(b"traceparent", TRACEPARENT.encode())]) is None
    assert tracing.finished_span("c", parent=None, start_ns=1, end_ns=2) is None
    assert "trace_id" not in _log_entry()
    tracing.stop()  # nothing to flush, nothing raised


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TRACEPARENT, True),
        (TRACEPARENT.upper(), False),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-4bf92f35-00f067aa0ba902b7-01", False),
        ("", False),
    ],
)
def test_the_form_of_a_traceparent(value: str, valid: bool) -> None:
    assert tracing.is_traceparent(value) is valid


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with running_otlp_receiver() as running:
        try:
            yield running
        finally:
            tracing.stop()


def test_spans_reach_the_receiver_as_one_tree(receiver: OtlpReceiver) -> None:
    assert tracing.start("unit", receiver.url, "unit-test") is True
    assert tracing.ENABLED is True
    remote = tracing.from_traceparent(TRACEPARENT)
    with tracing.span("admit", kind="server", parent=remote, attributes={"job.id": "j"}):
        ids = tracing.log_ids()
        entry = _log_entry()
        headers = tracing.inject({"Nats-Msg-Id": "x"})
        in_url = tracing.traceparent()
    assert ids is not None
    assert ids["trace_id"] == TRACEPARENT.split("-")[1]
    assert entry["trace_id"] == ids["trace_id"]
    assert entry["span_id"] == ids["span_id"]
    assert headers["Nats-Msg-Id"] == "x"
    assert headers["traceparent"] == in_url == f"00-{ids['trace_id']}-{ids['span_id']}-01"

    # The next hop: from the message headers, then from the URL form.
    with tracing.span("process", kind="consumer", parent=tracing.extract(headers)):
        captured = tracing.current()
    start = tracing.now_ns()
    committed = tracing.finished_span(
        "commit", parent=captured, start_ns=start, end_ns=start + 1000, error="boom"
    )
    with tracing.attached(committed), tracing.span("announce", kind="producer"):
        pass
    assert in_url is not None
    with tracing.span("webhook", kind="server", parent=tracing.from_traceparent(in_url)):
        pass
    tracing.stop()  # flushes what is queued: no waiting on the batch delay
    assert tracing.ENABLED is False

    spans = {s.name: s for s in receiver.received()}
    assert set(spans) == {"admit", "process", "commit", "announce", "webhook"}
    assert {s.trace_id for s in spans.values()} == {ids["trace_id"]}
    assert {s.service for s in spans.values()} == {"unit-test"}
    assert spans["admit"].parent_id == TRACEPARENT.split("-")[2]
    assert spans["admit"].kind == "server"
    assert spans["admit"].attributes == {"job.id": "j"}
    assert spans["process"].parent_id == spans["admit"].span_id
    assert spans["commit"].parent_id == spans["process"].span_id
    assert spans["commit"].error
    assert spans["announce"].parent_id == spans["commit"].span_id
    assert spans["webhook"].parent_id == spans["admit"].span_id


def test_a_malformed_traceparent_starts_no_trace_of_its_own(receiver: OtlpReceiver) -> None:
    tracing.start("unit", receiver.url)
    assert tracing.from_traceparent("00-not-a-traceparent-01") is None
    assert tracing.extract({}) is None
    assert tracing.extract({"traceparent": "garbage"}) is not None  # an empty context
    with tracing.span("root", parent=tracing.extract({"traceparent": "garbage"})):
        pass
    tracing.stop()
    (root,) = receiver.received()
    assert root.parent_id == ""
    assert root.service == "unit"


@pytest.mark.parametrize(
    ("value", "refused"),
    [("", False), ("http://otel-collector:4318", False), ("grpc://collector:4317", True)],
)
def test_the_endpoint_setting_is_an_http_url_or_empty(value: str, refused: bool) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": value, "OTEL_SERVICE_NAME": "gw-eu"}
    if refused:
        with pytest.raises(SettingsError, match=r"^OTEL_EXPORTER_OTLP_ENDPOINT: "):
            load_settings(ServiceSettings, environ)
        return
    settings = load_settings(ServiceSettings, environ)
    assert settings.otel_exporter_otlp_endpoint == value
    assert settings.otel_service_name == "gw-eu"
