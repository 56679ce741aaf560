"""The `PredictionReader` port as a small HTTP adapter of its own: `GET /v1/predictions/{id}`
read with proto's `ReplicatePrediction`, which knows `aborted` (the `replicate` package does not
and fails on it)."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import httpx
import msgspec

from ai_runner.adapters.replicate import aiohttp_transport, seconds_from_headers
from ai_runner.ports import PermanentRejection, TransientFailure
from jobs_proto.replicate import ReplicatePrediction, decode_prediction


class HttpPredictionReader:
    """Reads predictions with one pooled httpx client (over aiohttp, as the creates are); close
    it with `aclose`."""

    def __init__(self, *, api_token: str, base_url: str, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            transport=aiohttp_transport(),
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        )

    async def get(self, prediction_id: str) -> ReplicatePrediction:
        try:
            response = await self._http.get(f"/v1/predictions/{quote(prediction_id, safe='')}")
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            raise TransientFailure(
                f"no answer from Replicate: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code == 404:
            raise PermanentRejection(f"Replicate knows no prediction {prediction_id!r}")
        if response.status_code != 200:
            raise TransientFailure(
                f"Replicate answered HTTP {response.status_code} to a read",
                needs_operator=response.status_code in (401, 402, 403),
                retry_after_s=(
                    seconds_from_headers(response.headers) if response.status_code == 429 else None
                ),
            )
        try:
            return decode_prediction(response.content)
        except msgspec.DecodeError as exc:
            raise TransientFailure(f"Replicate's answer is not a prediction: {exc}") from exc

    async def aclose(self) -> None:
        await self._http.aclose()
