"""The base class of every error clo-mlx reports to a user (bad data, config, model, adapters).

The CLI prints these as one clear message (no traceback) and exits with status 2.
"""


class CloError(ValueError):
    """A problem with the user's input; the message names the file, line and field."""
