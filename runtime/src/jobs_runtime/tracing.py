"""OpenTelemetry traces, one job one trace: spans exported by OTLP/HTTP when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, the W3C `traceparent` carried in NATS headers and in the
Replicate webhook URL. Without the endpoint no SDK is installed and every hook returns at once.

Callers test `ENABLED` (a module flag) before any work on a hot path; every function here is
also safe to call when it is off (a span is then a shared no-op context manager, a context
`None`). The SDK reads its own `OTEL_*` variables (`OTEL_BSP_SCHEDULE_DELAY`,
`OTEL_EXPORTER_OTLP_HEADERS`, ...).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

# Off until `start` found an endpoint: read by the hooks before they do anything.
ENABLED = False

TRACEPARENT: Final = "traceparent"
# version-traceid-spanid-flags, lower-case hex (W3C Trace Context, level 1).
_TRACEPARENT_FORM: Final = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_propagator: Final = TraceContextTextMapPropagator()
_NO_SPAN: Final = contextlib.nullcontext()

Kind = Literal["internal", "server", "client", "producer", "consumer"]
_KINDS: Final = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
Attributes = Mapping[str, str | int | float | bool]

EXPORT_TIMEOUT_S: Final = 2.0

_provider: Any = None
_tracer: trace.Tracer = trace.NoOpTracer()


def start(service: str, endpoint: str, service_name: str = "") -> bool:
    """Install an SDK provider exporting to `endpoint` by OTLP/HTTP in batches, as
    `service_name` (or `service`); nothing when `endpoint` is empty. True: tracing is on."""
    global ENABLED, _provider, _tracer
    if not endpoint:
        return False
    # Imported here: a process without an endpoint never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name or service}))
    # The path OTLP/HTTP gives traces under a base endpoint, as the exporter would append it.
    # A short deadline per export: with the collector away, the last flush on the way out
    # gives up within the shutdown budget instead of the SDK's 10 s of retries.
    exporter = OTLPSpanExporter(
        endpoint=f"{endpoint.rstrip('/')}/v1/traces", timeout=EXPORT_TIMEOUT_S
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("jobs")
    ENABLED = True
    log.info("tracing on", extra={"otlp_endpoint": endpoint})
    return True


def stop(timeout_ms: int = 2000) -> None:
    """Export the spans still queued and stop: on the way out of a service."""
    global ENABLED, _provider, _tracer
    provider, _provider = _provider, None
    ENABLED = False
    _tracer = trace.NoOpTracer()
    if provider is None:
        return
    try:
        provider.force_flush(timeout_ms)
        provider.shutdown()
    except Exception as exc:
        log.warning("could not flush the last spans: %r", exc)


def span(
    name: str,
    *,
    kind: Kind = "internal",
    parent: Context | None = None,
    attributes: Attributes | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """A span current for the `with` block, child of `parent` (a context taken from headers
    or `current()`) or else of the current span; a shared no-op when tracing is off. An
    exception leaving the block marks the span as an error."""
    if not ENABLED:
        return _NO_SPAN
    return _tracer.start_as_current_span(
        name, context=parent, kind=_KINDS[kind], attributes=attributes
    )


def finished_span(
    name: str,
    *,
    parent: Context | None,
    start_ns: int,
    end_ns: int,
    attributes: Attributes | None = None,
    error: str | None = None,
    links: list[Context] | None = None,
) -> Context | None:
    """Record a span that already happened (one batch commit seen from each event's trace);
    its context, for work that follows from it; None when tracing is off."""
    if not ENABLED:
        return None
    linked = [
        Link(trace.get_current_span(c).get_span_context()) for c in links or () if c is not None
    ]
    done = _tracer.start_span(
        name, context=parent, attributes=attributes, start_time=start_ns, links=linked
    )
    if error is not None:
        done.set_status(Status(StatusCode.ERROR, error))
    done.end(end_ns)
    return trace.set_span_in_context(done, parent)


@contextlib.contextmanager
def attached(ctx: Context | None) -> Iterator[None]:
    """Make `ctx` current for the block (nothing when None)."""
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def now_ns() -> int:
    return time.time_ns()


def current() -> Context | None:
    """The current context, to parent spans made later elsewhere; None when tracing is off."""
    return otel_context.get_current() if ENABLED else None


def inject(headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the current span's `traceparent` added (in place, and returned)."""
    if ENABLED:
        _propagator.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The remote parent that message or request `headers` carry; None without one."""
    if not ENABLED or not headers or TRACEPARENT not in headers:
        return None
    return _propagator.extract(headers)


def extract_asgi(headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
    """The remote parent an ASGI request's headers carry (a browser's `traceparent`)."""
    if not ENABLED:
        return None
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }
    return extract(carrier)


def annotate(name: str, value: str | int | float | bool) -> None:
    """Set an attribute on the current span (an answer's status, say)."""
    if ENABLED:
        trace.get_current_span().set_attribute(name, value)


def from_traceparent(value: str | None) -> Context | None:
    """The remote parent a bare `traceparent` value names (from a webhook URL); None when
    tracing is off or the value is not a well-formed traceparent."""
    if not ENABLED or not value or not is_traceparent(value):
        return None
    return _propagator.extract({TRACEPARENT: value})


def traceparent() -> str | None:
    """The current span as a W3C `traceparent` value (for a URL); None without one."""
    if not ENABLED:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def is_traceparent(value: str) -> bool:
    """Whether `value` has the form of a W3C traceparent, ids not all zero."""
    if not _TRACEPARENT_FORM.match(value):
        return False
    _, trace_id, span_id, _ = value.split("-")
    return value[:2] != "ff" and trace_id != "0" * 32 and span_id != "0" * 16


def log_ids() -> dict[str, str] | None:
    """`trace_id` and `span_id` of the current span, in hex, for a log line; None without one."""
    if not ENABLED:
        return None
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return {"trace_id": f"{found.trace_id:032x}", "span_id": f"{found.span_id:016x}"}
