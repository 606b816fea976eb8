"""The algorithms, one file each: the agent and its commented `get_config()`. They build on `core/` alone; which
method a config is, and its per-domain settings, are the registry's (`protocols/methods.py`)."""
