"""Qingbo: the HTTP client, its error taxonomy, and the callback route."""
