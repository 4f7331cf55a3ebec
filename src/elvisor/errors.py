"""Errors a user can act on.

A `UserError` is printed as one line (no traceback) and ends the program with exit status 2.
Its message says what is wrong and what to do about it.
"""


class UserError(Exception):
    """Bad input or an unusable host: one line for the user, exit status 2."""

    exit_status = 2
