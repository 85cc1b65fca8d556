"""Emulators of the chat platforms the bot talks to, for tests, benchmarks and local play."""
