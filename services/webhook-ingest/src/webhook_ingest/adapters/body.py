"""Reading a webhook request's body under the endpoint's limits, the step between the rate limit
and the signature check."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from jobs_proto.problems import PAYLOAD_TOO_LARGE
from webhook_ingest.adapters.answers import (
    CLOSE,
    READ_TIMEOUT,
    RETRY_AFTER_S,
    TOO_MANY_LARGE_BODIES,
    Refusal,
    gone,
    problem_answer,
    unauthenticated,
)
from webhook_ingest.limits import LARGE_BODY_BYTES, LargeBodySlots
from webhook_ingest.ports import WebhookObserver
from webhook_ingest.verify import VerificationError, WebhookVerifier


class BodyReader:
    """Reads one request's body under the size limit, the large-body cap and a deadline, once
    its signature headers are present and fresh.

    Not `jobs_runtime.web.read_limited`: a body must take a large-body slot the moment it is
    known to be large (declared, or counted past 1 MiB when chunked), and the whole read runs
    under `WEBHOOK_READ_TIMEOUT_S`. Order: a declared size over the limit (`413`), the headers
    and timestamp (`401`), then the large-body cap (`503`), so a sender that cannot be signed
    never holds a slot, and a body that is too large is never looked at further.
    """

    def __init__(
        self,
        request: Request,
        max_bytes: int,
        slots: LargeBodySlots,
        source: str,
        verifier: WebhookVerifier,
        observer: WebhookObserver,
    ) -> None:
        self._request = request
        self._observer = observer
        self._max_bytes = max_bytes
        self._slots = slots
        self._source = source
        self._verifier = verifier
        self._holding = False

    def release(self) -> None:
        if self._holding:
            self._slots.give_back(self._source)
            self._holding = False
            self._observer.large_bodies(self._slots.in_use)

    def _large_body_refused(self) -> Refusal | None:
        if self._holding:
            return None
        if self._slots.try_take(self._source):
            self._holding = True
            self._observer.large_bodies(self._slots.in_use)
            return None
        if self._slots.of(self._source) >= self._slots.per_source:
            detail = f"{self._slots.per_source} large bodies from this address are being received"
        else:
            detail = f"{self._slots.capacity} large bodies are already being received"
        return Refusal(
            problem_answer(
                TOO_MANY_LARGE_BODIES,
                f"{detail}; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ),
            "too_many_large_bodies",
        )

    def _too_large(self) -> Refusal:
        detail = f"the body is over the limit of {self._max_bytes} bytes"
        return Refusal(problem_answer(PAYLOAD_TOO_LARGE, detail), "payload_too_large")

    async def read(self, timeout_s: float) -> bytes | Refusal:
        declared = self._request.headers.get("content-length", "")
        # ASCII digits only (`isdigit` also takes "²", which `int` refuses), and few enough that
        # `int` stays cheap on a hostile header.
        digits = declared.isascii() and declared.isdigit() and len(declared) <= 18
        size_declared = int(declared) if digits else None
        if size_declared is not None and size_declared > self._max_bytes:
            return self._too_large()
        try:
            self._verifier.check_headers(self._request.headers)
        except VerificationError as exc:
            return await self._unsigned(exc, size_declared, timeout_s)
        if size_declared is not None and size_declared > LARGE_BODY_BYTES:
            refused = self._large_body_refused()
            if refused is not None:
                return refused
        try:
            async with asyncio.timeout(timeout_s):
                return await self._chunks()
        except TimeoutError:
            # Close the connection: reading and discarding the rest would keep the sender's
            # socket, and our time, for as long as it keeps trickling.
            response = problem_answer(
                READ_TIMEOUT,
                f"the body did not arrive within {timeout_s:g} s",
                headers=CLOSE,
            )
            return Refusal(response, "read_timeout")
        except ClientDisconnect:
            return gone()

    async def _unsigned(
        self, exc: VerificationError, size_declared: int | None, timeout_s: float
    ) -> Refusal:
        """A request whose headers cannot carry a valid signature: `401` without reading a
        declared body (its size is known to be within the limit). A body of unknown size is
        counted and dropped as it comes, holding neither memory nor a slot, so that an
        oversized one still gets the `413` that comes first; when its time is up it gets the
        `401` it was always going to get, and the connection is closed."""
        if size_declared is not None:
            return unauthenticated(exc, CLOSE)
        size = 0
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in self._request.stream():
                    size += len(chunk)
                    if size > self._max_bytes:
                        return self._too_large()
        except TimeoutError:
            return unauthenticated(exc, CLOSE)
        except ClientDisconnect:
            return gone()
        return unauthenticated(exc)

    async def _chunks(self) -> bytes | Refusal:
        chunks: list[bytes] = []
        size = 0
        async for chunk in self._request.stream():
            size += len(chunk)
            if size > self._max_bytes:
                return self._too_large()
            if size > LARGE_BODY_BYTES:
                refused = self._large_body_refused()
                if refused is not None:
                    return refused
            chunks.append(chunk)
        return b"".join(chunks)
