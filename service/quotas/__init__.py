"""Requests-per-minute limits per key and per team, counted in Redis."""
