"""The one exception type that means "the user asked for something that cannot work"."""


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits with status 2, without a traceback.

    Raise it before anything is written, so that a rejected command leaves the output folder untouched.
    """
