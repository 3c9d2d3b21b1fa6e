"""The catalog's operator side: the catalog in force read and replaced over the admin API,
audited (it sits above the audit domain, which the catalog itself sits below)."""
