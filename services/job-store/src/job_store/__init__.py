"""The job-store service."""
