"""User-facing errors: the command-line entry points print these as one line, with no traceback."""


class UserError(Exception):
    """A mistake in the user's input (config value, path, missing data) with a message that says what to do."""


class RunDiverged(Exception):
    """Training produced a non-finite loss; the run stops and keeps its last good checkpoint."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step
