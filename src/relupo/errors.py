"""Errors a user can act on.

Every error relupo raises on purpose is a `RelupoError`. The CLI prints its message as one line and
exits with status 2, without a traceback, so each message must name what failed, on which value
(file, row, field or option) and what to do next.
"""


class RelupoError(Exception):
    """An error caused by input the user controls: configuration, data files, paths."""


class ConfigError(RelupoError):
    """An invalid option value or combination of options."""


class DataError(RelupoError):
    """An unreadable data file or an invalid row in one."""
