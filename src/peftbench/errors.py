"""The one exception type that means "the user asked for something that cannot work", and how any exception
is said in one line."""


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits with status 2, without a traceback.

    Raise it before anything is written, so that a rejected command leaves the output folder untouched.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, "" when it has none (str(exc) may be empty or all blank)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
