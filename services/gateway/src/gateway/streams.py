"""How many long-lived streams (job events, a user's events, a job's output) this gateway
process holds, per user and in all: `USER_MAX_STREAMS` refuses one more of a user with `429`,
`MAX_STREAMS` one more of anybody with `503`, each with `Retry-After`.

Pure bookkeeping, no I/O: the HTTP adapter takes a `StreamSlot` before a stream starts and
closes it however the stream ends.
"""

from __future__ import annotations

from typing import Final

from .limits import LimitExceeded

# A stream lives for minutes or hours: a refused client should not come straight back. A
# user's own stream ends when they close a tab; a full process may be relieved sooner by a
# load balancer sending the retry to another replica.
USER_RETRY_AFTER_S: Final = 10
PROCESS_RETRY_AFTER_S: Final = 5


class StreamsFull(Exception):
    """This process holds `MAX_STREAMS` streams (`503`): another replica may have room."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class StreamSlot:
    """One open stream's place in the count; `close` gives it back, once, however often it is
    called (a stream can end along more than one path)."""

    def __init__(self, streams: OpenStreams, user_id: str) -> None:
        self._streams = streams
        self._user_id = user_id
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._streams._give_back(self._user_id)


class OpenStreams:
    """The count of open streams by user. A limit of 0 is none; counting goes on regardless,
    since the open-streams gauge is read from here.

    Per process, not per deployment: a user spread by the load balancer over `n` replicas may
    hold up to `n` times `per_user`, which still bounds what one token costs each process.
    """

    def __init__(self, per_user: int = 0, in_all: int = 0) -> None:
        self.per_user = per_user
        self.in_all = in_all
        self._by_user: dict[str, int] = {}
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    def of(self, user_id: str) -> int:
        return self._by_user.get(user_id, 0)

    def take(self, user_id: str) -> StreamSlot:
        """A slot for one more stream of `user_id`; `LimitExceeded` (limit `streams`) when the
        user holds `per_user` already, else `StreamsFull` when the process holds `in_all`.

        The user's limit is checked first: a user at their own limit is told so (`429`) even
        when the process is full too, since that is the refusal they can act on.
        """
        held = self.of(user_id)
        if self.per_user and held >= self.per_user:
            raise LimitExceeded(
                f"at most {self.per_user} event or output streams may be open at once; "
                "close one (or use /api/events for all jobs) and retry",
                USER_RETRY_AFTER_S,
                "streams",
            )
        if self.in_all and self._open >= self.in_all:
            raise StreamsFull(
                "this gateway holds as many streams as it may; retry later",
                PROCESS_RETRY_AFTER_S,
            )
        self._by_user[user_id] = held + 1
        self._open += 1
        return StreamSlot(self, user_id)

    def _give_back(self, user_id: str) -> None:
        held = self._by_user.get(user_id, 0) - 1
        if held > 0:
            self._by_user[user_id] = held
        else:
            # No entry for users without streams: memory follows the streams, not the users.
            self._by_user.pop(user_id, None)
        self._open = max(0, self._open - 1)
