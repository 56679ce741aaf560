"""The one client of the job-store's endpoints over NATS request/reply (a NATS micro service),
for every service that asks it: the gateway's reads, the ai-runner's stuck jobs."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from jobs_runtime.errors import Unavailable

R = TypeVar("R")


class Refused(Exception):
    """The job-store answered a `4xx` error: it will refuse the same request again."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"the job-store refused the request ({code}): {description}")
        self.code = code
        self.description = description


class JobStoreClient:
    """`ask` answers the decoded reply; `Refused` for a `4xx` error reply; `Unavailable` when
    NATS is disconnected, nobody answers in `timeout_s`, the job-store answers `5xx` (or an
    error without a code), or its answer does not decode."""

    def __init__(self, nc: NATS, *, timeout_s: float = 2.0) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._encoder = msgspec.json.Encoder()
        self._decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}

    async def ask(self, subject: str, request: msgspec.Struct, reply_type: type[R]) -> R:
        # While reconnecting nats-py buffers a request until it times out much later: answer
        # at once instead.
        if not self._nc.is_connected:
            raise Unavailable("not connected to NATS")
        try:
            reply = await self._nc.request(
                subject, self._encoder.encode(request), timeout=self._timeout_s
            )
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"the job-store did not answer: {exc!r}") from exc
        headers = reply.headers or {}
        if ERROR_CODE_HEADER in headers or ERROR_HEADER in headers:
            code = headers.get(ERROR_CODE_HEADER, "")
            description = headers.get(ERROR_HEADER, "")
            if code.startswith("4"):
                raise Refused(code, description)
            raise Unavailable(f"the job-store answered {code or 'an error'}: {description}")
        decoder = self._decoders.get(reply_type)
        if decoder is None:
            decoder = self._decoders[reply_type] = msgspec.json.Decoder(reply_type)
        try:
            return decoder.decode(reply.data)  # type: ignore[no-any-return]
        except msgspec.DecodeError as exc:
            raise Unavailable(
                f"the job-store answered something else than a {reply_type.__name__}: {exc}"
            ) from exc
