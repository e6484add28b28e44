"""The ``mmrobust`` command."""
