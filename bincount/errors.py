"""Errors a user can cause and fix; scripts print them as one clear message, no traceback."""


class BincountError(Exception):
    """Base class of the mistakes a user can make (bad data, missing files, bad config).
    A script prints it as one line and exits with ``exit_code``."""

    exit_code = 2


def expect_int(key: str, value: object, least: int) -> int:
    """``value`` when it is an integer >= ``least``; else a BincountError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise BincountError(f"{key}: expected an integer >= {least}, got {value!r}")
    return value


def expect_bool(key: str, value: object) -> bool:
    """``value`` when it is true or false (not a truthy string); else a BincountError."""
    if not isinstance(value, bool):
        raise BincountError(f"{key}: expected true or false, got {value!r}")
    return value

