"""Replicate's API as `webhook-ingest fetch-secret` uses it: one call for the webhook signing key.

httpx, the HTTP client the ai-runner reaches Replicate with (through the `replicate` package);
a blocking client suffices for a single GET from a one-shot command.
"""

from __future__ import annotations

from typing import Final

import httpx
import msgspec

from webhook_ingest.verify import SECRET_PREFIX, parse_secrets

SECRET_PATH: Final = "/v1/webhooks/default/secret"
# The answer is a few dozen bytes; anything much larger is not Replicate's.
_MAX_ANSWER_BYTES: Final = 64 * 1024


class SecretFetchError(Exception):
    """Why the key could not be fetched, in one line without the token or the key."""


class _SecretAnswer(msgspec.Struct):
    key: str


def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    raw = b""
    for chunk in response.iter_bytes():
        raw += chunk
        if len(raw) >= limit:
            break
    return raw[:limit]


def fetch_webhook_secret(base_url: str, api_token: str, *, timeout_s: float) -> str:
    """The `whsec_...` key Replicate signs this account's webhooks with."""
    url = base_url.rstrip("/") + SECRET_PATH
    headers = {
        "Authorization": f"Bearer {api_token}",
        "Accept": "application/json",
        "User-Agent": "webhook-ingest fetch-secret",
    }
    # Redirects are not followed (httpx's default): the `Authorization` header would go along
    # to wherever they point, so a `3xx` is an answer like any other that is not `2xx`.
    try:
        with (
            httpx.Client(timeout=timeout_s) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if not response.is_success:
                raise SecretFetchError(
                    f"{url} answered {response.status_code} {response.reason_phrase}"
                )
            raw = _read_at_most(response, _MAX_ANSWER_BYTES + 1)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise SecretFetchError(f"{url} could not be reached: {exc}") from None
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        # Timeouts while reading, resets, a URL httpx cannot open.
        raise SecretFetchError(f"{url} could not be read: {type(exc).__name__}") from None
    if len(raw) > _MAX_ANSWER_BYTES:
        raise SecretFetchError(f"{url} answered more than {_MAX_ANSWER_BYTES} bytes")
    try:
        key = msgspec.json.decode(raw, type=_SecretAnswer).key.strip()
    except msgspec.DecodeError:
        raise SecretFetchError(f'{url} did not answer {{"key": "{SECRET_PREFIX}..."}}') from None
    try:
        # The same check the service applies to REPLICATE_WEBHOOK_SECRET at start.
        parse_secrets(key)
    except ValueError as exc:
        raise SecretFetchError(f"{url} answered a key the service cannot use: {exc}") from None
    if "," in key:
        raise SecretFetchError(f"{url} answered more than one key")
    return key
