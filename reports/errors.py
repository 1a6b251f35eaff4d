"""Bad-input error for the torch-free reports package; the CLI maps it to exit code 2."""
from __future__ import annotations


class ReportInputError(ValueError):
    """A run directory, claims file or JSON the report reads is missing or malformed."""

    exit_code = 2

    def __init__(self, path, field: str | None, message: str):
        self.path = str(path)
        self.field = field
        where = self.path if field is None else f"{self.path}: {field}"
        super().__init__(f"{where}: {message}")
