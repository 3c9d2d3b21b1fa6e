"""Teams, their API keys, and authentication of callers and admins."""
