"""The ai-runner's edges to the outside world; the only code that touches Replicate over HTTP."""
