"""Errors a user can fix from the message alone; entry points print them without a traceback."""


class ConfigError(ValueError):
    """A config value that cannot work (the message names the key and what to use instead)."""
