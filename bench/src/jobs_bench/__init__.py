"""make bench: the system and its baselines under load, measured in one run on one machine."""
