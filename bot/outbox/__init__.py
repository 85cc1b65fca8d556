"""The durable outbox: every message the product sends on its own initiative goes through it."""
