"""The `PredictionReader` port as a small HTTP adapter of its own: `GET /v1/predictions/{id}`
read with proto's `ReplicatePrediction`, which knows `aborted` (the `replicate` package does not
and fails on it)."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import httpx
import msgspec

from ai_runner.adapters.replicate import aiohttp_transport
from ai_runner.ports import PermanentRejection
from jobs_proto.replicate import ReplicatePrediction, decode_prediction
from jobs_runtime.errors import Unavailable


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
            raise Unavailable(f"no answer from Replicate: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            raise PermanentRejection(f"Replicate knows no prediction {prediction_id!r}")
        if response.status_code != 200:
            # Only logged by the reconciler, which reads the job again later in any case.
            raise Unavailable(f"Replicate answered HTTP {response.status_code} to a read")
        try:
            return decode_prediction(response.content)
        except msgspec.DecodeError as exc:
            raise Unavailable(f"Replicate's answer is not a prediction: {exc}") from exc

    async def aclose(self) -> None:
        await self._http.aclose()
