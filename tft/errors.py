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


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one line for the user: its first non-empty line, its type where it has no text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
