"""`jobsctl`: the operator's command over NATS, the job-store and Replicate."""
