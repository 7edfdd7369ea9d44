"""The one error type users see: ``UserError`` (bad input, an impossible setting, a run stopped for
a reason the user can act on). ``r1lab`` prints its message on one line and exits with code 2;
anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """Bad input or a stopped run; the message says what to change (a file, line, field or flag)."""
