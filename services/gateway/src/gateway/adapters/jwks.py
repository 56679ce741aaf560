"""The `JwksSource` port over HTTP: fetches the JWKS document at `AUTH_JWKS_URL`.

`urllib` in a worker thread, so a slow issuer never blocks the event loop; the timeout bounds
how long the requests waiting for an unknown key can be held.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from typing import Final

from gateway.ports import JwksFetchError

log = logging.getLogger("gateway.jwks")

DEFAULT_TIMEOUT_S: Final = 5.0
# A JWKS is a few KiB; anything much larger is not one.
MAX_JWKS_BYTES: Final = 1024 * 1024


class HttpJwksSource:
    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("AUTH_JWKS_URL must be an http(s) URL")
        self._url = url
        self._timeout_s = timeout_s

    async def fetch(self) -> bytes:
        try:
            body = await asyncio.to_thread(self._fetch)
        except JwksFetchError as exc:
            log.warning("JWKS fetch failed", extra={"url": self._url, "reason": str(exc)})
            raise
        log.info("JWKS fetched", extra={"url": self._url, "bytes": len(body)})
        return body

    def _fetch(self) -> bytes:
        request = urllib.request.Request(self._url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body: bytes = response.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise JwksFetchError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JwksFetchError(f"{type(exc).__name__}: {reason}") from None
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError("the JWKS is larger than 1 MiB")
        return body
