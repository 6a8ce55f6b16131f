"""The one user-facing error type.

Anything a user can fix (a bad option, a missing file, an unknown name) is raised as
``MlbenchError``; the CLI prints its message on one line and exits with code 2. Everything
else is a bug and keeps its traceback.
"""


class MlbenchError(Exception):
    """A mistake in the user's input or environment, explained in one line."""

    def __init__(self, message: str):
        # One line, always: the CLI contract is "one clear line", so fold any newlines here.
        super().__init__(" ".join(str(message).split()))
