"""The error type for user mistakes: the CLI prints its message as one line and exits non-zero."""


class HaaresError(Exception):
    """A mistake the user can fix (bad input, missing file, unreachable database).

    The message is one line that says what was wrong and what to do.
    """


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its class name when it has none.

    The one rule for squeezing an error into the one-line messages of the CLI and the queue.
    """
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
