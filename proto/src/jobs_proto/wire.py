"""Decoding bytes that came from outside: every way they can fail to be the JSON asked for is
one `msgspec.DecodeError`, so a caller that handles that one error handles them all."""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec

T = TypeVar("T")

# Any JSON value: what a body is before it is validated against a type.
_any_json: Final[msgspec.json.Decoder[Any]] = msgspec.json.Decoder()


def decode_json(data: bytes, decoder: msgspec.json.Decoder[T] = _any_json) -> T:
    """`data` decoded by `decoder` (any JSON value by default); raises `msgspec.DecodeError`.

    msgspec raises two other errors on hostile input, both found by fuzzing: a
    `UnicodeDecodeError` for a string holding bytes that are not UTF-8, and a `RecursionError`
    for arrays or objects nested about a thousand deep. Neither says anything about our code,
    so neither may reach a caller as anything but "not valid JSON".
    """
    try:
        return decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None
