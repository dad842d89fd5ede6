"""User-facing errors: each carries one line that names the file, key or value and what was expected.

The command-line entry points print that line and exit with code 2, with no traceback.
"""


class GicError(Exception):
    """A problem the user can act on (bad input, missing file, missing credentials)."""


class ConfigError(GicError, ValueError):
    """A config file or override is wrong."""


class DataError(GicError):
    """The data folder, an image or the cache is wrong."""


class ModelError(GicError):
    """A weights or model file is wrong."""
