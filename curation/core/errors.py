"""Errors that the CLI reports as one clear line instead of a traceback."""


class CurationError(Exception):
    """A user-facing error: bad configuration, missing input, unreadable file."""


class ConfigError(CurationError):
    """The pipeline or stage configuration is invalid."""


class MissingDependencyError(CurationError):
    """An optional dependency needed by a component is not installed."""
