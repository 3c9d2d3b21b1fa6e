"""The web console at /console: server-rendered pages (Jinja2, htmx) for team leads, finance
and operators, over the same service functions the JSON routes call (README "Console")."""
