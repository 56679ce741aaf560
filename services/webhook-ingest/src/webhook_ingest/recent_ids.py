"""The ids an adapter has lately seen stored, bounded, so it can answer a repeat without asking
NATS again (the `started` event of a prediction's many output webhooks)."""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    """The last `capacity` ids added, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: str) -> None:
        self._ids[key] = None
        self._ids.move_to_end(key)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
