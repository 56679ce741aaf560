"""make chaos: one fault at a time under steady load, then an audit of every job."""
