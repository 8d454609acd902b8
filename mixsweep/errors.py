"""User-facing errors.

A `MixsweepError` is bad input, not a bug: the CLI prints its message as one line and exits with
status 2, no traceback. The message names the file, key or path and what is wrong with it.
"""


class MixsweepError(Exception):
    """Bad input that the user can fix; the message is one line."""
