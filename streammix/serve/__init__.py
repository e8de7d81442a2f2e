"""Serving scores: an HTTP endpoint (and, to come, a Redis Streams consumer)."""
