"""A faithful stand-in for Qingbo, for tests, `dev` and benchmarks."""
