"""Typed errors. Each one renders as a single line for the user (click prints it and exits 1)."""

from __future__ import annotations

import click


class TftError(click.ClickException):
    """A user-facing error: one clear line, no traceback."""

    exit_code = 1


class DataError(TftError):
    """Bad input data, located at a file and (when known) a line."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class TaskError(TftError):
    """Unknown task or an invalid combination of task options."""


class DownloadError(TftError):
    """A dataset archive could not be fetched, verified or unpacked."""
