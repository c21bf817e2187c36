"""The one exception type a user can cause; the CLI prints it as one line."""


class LakehouseError(Exception):
    """A problem the user can fix: the message says what, where and what to do."""
