"""The ai-runner service."""
