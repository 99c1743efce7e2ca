"""Errors a user can cause and fix; scripts print them as one clear message, no traceback."""


class BincountError(Exception):
    """Base class of the mistakes a user can make (bad data, missing files, bad config)."""
