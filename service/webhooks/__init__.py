"""Webhooks to apps: the outbox, signing, delivery with retries, SSRF policy, the log."""
