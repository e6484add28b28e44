"""The exception for inputs the user gave that cannot be used.

``UserError`` (a ``ValueError``) means: a file, name, setting or combination given by the
user is wrong, and the message is one sentence naming it and what to do.  The command line
prints it as one ``error:`` line; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A file, name, setting or combination given by the user cannot be used."""
