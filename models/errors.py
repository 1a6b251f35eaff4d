"""The one exception for bad user input: names the file and the field; the CLI maps it to exit code 2.

It lives in models/ because every torch-side package may import models (bench -> protocols -> models);
protocols.errors re-exports it under its usual name."""
from __future__ import annotations


class BadInput(ValueError):
    """Input the user gave us is unusable (missing file, corrupt image, malformed YAML/CSV...)."""

    exit_code = 2

    def __init__(self, path, field: str | None, message: str):
        self.path = str(path)
        self.field = field
        self.message = message
        where = self.path if field is None else f"{self.path}: {field}"
        super().__init__(f"{where}: {message}")
