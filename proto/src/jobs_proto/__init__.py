"""Every event, subject, stream and HTTP body of the job system, defined once for all services."""
