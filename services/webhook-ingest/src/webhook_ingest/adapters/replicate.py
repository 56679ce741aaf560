"""Replicate's API as `webhook-ingest fetch-secret` uses it: one call for the webhook signing key.

The standard library's `urllib` suffices for a single blocking GET from a one-shot command, and
keeps the service free of an HTTP client dependency it would otherwise never use.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Final

import msgspec

from webhook_ingest.verify import SECRET_PREFIX, parse_secrets

SECRET_PATH: Final = "/v1/webhooks/default/secret"
# The answer is a few dozen bytes; anything much larger is not Replicate's.
_MAX_ANSWER_BYTES: Final = 64 * 1024


class SecretFetchError(Exception):
    """Why the key could not be fetched, in one line without the token or the key."""


class _SecretAnswer(msgspec.Struct):
    key: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would resend the `Authorization` header to wherever a redirect points.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch_webhook_secret(base_url: str, api_token: str, *, timeout_s: float) -> str:
    """The `whsec_...` key Replicate signs this account's webhooks with."""
    url = base_url.rstrip("/") + SECRET_PATH
    request = urllib.request.Request(
        url,
        headers={
            "Authorization": f"Bearer {api_token}",
            "Accept": "application/json",
            "User-Agent": "webhook-ingest fetch-secret",
        },
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            raw = response.read(_MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise SecretFetchError(f"{url} answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SecretFetchError(f"{url} could not be reached: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        # Timeouts while reading, resets, a URL urllib cannot open.
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
