"""One exception hierarchy for everything a user can get wrong.

Every error a user can act on is a `GroklmError` with a message that says what happened and
what to do about it. The CLI prints that message (no traceback) and exits non-zero; library
callers can catch the base class or a specific child.
"""


class GroklmError(Exception):
    """Base class of every error groklm raises on purpose."""


class ConfigError(GroklmError):
    """An unknown preset, an unknown or ill-typed config key, inconsistent settings."""


class DataError(GroklmError):
    """Missing, empty, unreadable or malformed input data."""


class TokenizerError(GroklmError):
    """A tokenizer that cannot be trained, loaded or used as asked."""


class CheckpointError(GroklmError):
    """A run directory or checkpoint that is missing, corrupt or incompatible."""
