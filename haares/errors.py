"""The error type for user mistakes: the CLI prints its message as one line and exits non-zero."""


class HaaresError(Exception):
    """A mistake the user can fix (bad input, missing file, unreachable database).

    The message is one line that says what was wrong and what to do.
    """
