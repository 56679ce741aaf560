"""Reads one prediction from Replicate (`GET /v1/predictions/{id}`) as the ai-runner does, and
keeps what an operator wants to see."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from jobs_ops.reports import PredictionReport


class PredictionReader:
    """One pooled client; close with `aclose`."""

    def __init__(self, *, api_token: str, base_url: str, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json"},
            timeout=timeout_s,
        )

    async def get(self, prediction_id: str) -> PredictionReport:
        try:
            response = await self._http.get(f"/v1/predictions/{quote(prediction_id, safe='')}")
        except httpx.HTTPError as exc:
            return PredictionReport(
                prediction_id=prediction_id, problem=f"no answer: {type(exc).__name__}: {exc}"
            )
        if response.status_code != 200:
            return PredictionReport(
                prediction_id=prediction_id, problem=f"HTTP {response.status_code}"
            )
        try:
            body: dict[str, Any] = msgspec.json.decode(response.content, type=dict[str, Any])
        except msgspec.DecodeError as exc:
            return PredictionReport(prediction_id=prediction_id, problem=f"not JSON: {exc}")
        return PredictionReport(
            prediction_id=prediction_id,
            status=_text(body.get("status")),
            created_at=_text(body.get("created_at")),
            started_at=_text(body.get("started_at")),
            completed_at=_text(body.get("completed_at")),
            error=_text(body.get("error")),
            data_removed=bool(body.get("data_removed", False)),
            metrics=body.get("metrics") if isinstance(body.get("metrics"), dict) else None,
        )

    async def aclose(self) -> None:
        await self._http.aclose()


def _text(value: object) -> str | None:
    return None if value is None else str(value)
