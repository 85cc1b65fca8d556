"""Scheduled work: what is due at a moment, and the APScheduler tick that runs it."""
