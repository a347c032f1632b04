"""The error type for user mistakes (the CLI prints its message as one line and exits non-zero), and the
one-line formatting of any exception (`first_line`, `one_line`)."""


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


def one_line(exc: BaseException, *, last: bool = False) -> str:
    """An exception as one line for logs and the queue's error summaries: "OSError: " and the first line
    of its message (the last with `last`: a training child's summary), or its class name alone."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if last else lines[0]}" if lines else type(exc).__name__
