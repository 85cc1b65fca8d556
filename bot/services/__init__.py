"""Use cases: one transaction each, called by the CLI, the channels and the scheduler."""
