"""The model catalog: which models exist, their rules, camera tags and prices."""
