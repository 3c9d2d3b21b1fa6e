"""Qingbo Gateway: the governed front door to the paid Qingbo video API."""
