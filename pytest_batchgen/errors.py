"""Errors a user can cause, carrying the file and line to point at.

The plugin turns these into pytest usage errors, so users see ``path:line: message``
and the fix, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class BatchgenError(Exception):
    """A problem in user input (plan, checklist, options) with a location and a fix."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        super().__init__(self.format())

    def format(self) -> str:
        if self.path is None:
            return self.message
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class PlanError(BatchgenError):
    """The plan file is missing, malformed or inconsistent."""


class ChecklistError(BatchgenError):
    """A Validation Checklist line matches no form, or refers to something the plan lacks."""
