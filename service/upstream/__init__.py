"""Qingbo: the HTTP client, its error taxonomy, the answer reader and its cleaning, and the
public quote (the callback route is the task domain's: service/tasks/callback_routes.py)."""
