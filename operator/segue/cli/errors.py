"""The one exception the CLI turns into ``error: <message>`` and an exit code."""

from __future__ import annotations


class CliError(Exception):
    """A problem the user can act on; printed without a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
