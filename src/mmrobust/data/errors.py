"""The one exception type for bad data: its message is a single sentence naming the problem."""

from mmrobust.errors import UserError


class DataError(UserError):
    """Raised when a dataset folder, file, array or name cannot be used."""
