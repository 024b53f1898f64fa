class CliError(Exception):
    """A problem the user can fix: printed as one line, exit status 2, no traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (driver errors run to several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
