"""Keeping every paid video: each completed task's videos are copied from Qingbo's links
(which stop working after 24 h or 7 days) into the company's object store, and served
from there (README "Archive")."""
