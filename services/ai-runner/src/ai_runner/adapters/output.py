"""The `OutputAppender` port over the runtime's `OutputLog` (the `<JOBS>_OUTPUT` stream)."""

from __future__ import annotations

import uuid

from ai_runner.ports import LogEnd
from jobs_runtime.output import OutputCursor, OutputLog


class LogAppender:
    """A prediction's output log as the relay writes it."""

    def __init__(self, log: OutputLog) -> None:
        self._log = log

    async def end(self, job_id: uuid.UUID, prediction_id: str) -> LogEnd:
        cursor = await self._log.cursor(job_id, prediction_id)
        return LogEnd(cursor.end, cursor.seq)

    async def offer(
        self, job_id: uuid.UUID, prediction_id: str, offset: int, text: str, known: LogEnd
    ) -> LogEnd:
        cursor = await self._log.offer(
            job_id, prediction_id, offset, text, OutputCursor(known.end, known.seq)
        )
        return LogEnd(cursor.end, cursor.seq)
