"""What the ai-runner does with each event it consumes: a requested job becomes at most one
Replicate prediction (`JobSubmitted`) or a failed job (`JobFailed`), a cancel request cancels
it, a started prediction that is not the job's is canceled as an orphan; a per-job claim keeps
runners from doing any of it twice. Ports come in as arguments; one module per concern."""

from ai_runner.handlers.binding import handle_started
from ai_runner.handlers.canceling import handle_cancel_requested
from ai_runner.handlers.creating import webhook_url
from ai_runner.handlers.runner import Runner
from ai_runner.handlers.submitting import handle_requested

__all__ = [
    "Runner",
    "handle_cancel_requested",
    "handle_requested",
    "handle_started",
    "webhook_url",
]
