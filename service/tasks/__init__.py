"""Video tasks: admission, the public task API, and their execution against Qingbo."""
