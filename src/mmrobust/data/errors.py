"""The one exception type for bad data: its message is a single sentence naming the problem."""


class DataError(ValueError):
    """Raised when a dataset folder, file, array or name cannot be used."""
