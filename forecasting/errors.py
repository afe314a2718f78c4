"""Errors that mean the user's input is wrong (shown as one line, exit code 2)."""


class InputError(ValueError):
    """Bad user input: the message is a complete, one-line reason fit to show the user."""
