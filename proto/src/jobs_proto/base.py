"""The one base of every wire type: frozen, keyword-only, camelCase, tolerant of unknown fields.

Schema-evolution policy for everything derived from it: a new field gets a default, a field's
type never changes, and readers skip fields they do not know, so older and newer releases can
exchange messages during a rollout.
"""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of every event, API body and job input."""
