"""Webhook event ids (Standard Webhooks' `webhook-id`)."""

from __future__ import annotations

import uuid


def new_event_id() -> str:
    return "msg_" + uuid.uuid4().hex
