"""User-facing errors.

A `MixsweepError` is bad input, not a bug: the CLI prints its message as one line and exits with
status 2, no traceback. The message names the file, key or path and what is wrong with it.
"""


class MixsweepError(Exception):
    """Bad input that the user can fix; the message is one line."""


class Diverged(MixsweepError):
    """Training went non-finite (a NaN or infinite loss): the stage is recorded as diverged, not done, and not
    retried on its own (the same seed diverges again); its fine-tunes never start."""
