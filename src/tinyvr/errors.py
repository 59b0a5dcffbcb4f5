"""One exception family for everything tinyvr reports to users.

Messages always name the file, row (line) or field at fault so that a user can fix the input
without reading a traceback.
"""

from __future__ import annotations


class TinyVRError(Exception):
    """Base class of every error tinyvr raises on purpose."""


class ConfigError(TinyVRError):
    """A config file, field or value is wrong (names the field and what is allowed)."""


class DataError(TinyVRError):
    """A dataset file or row is malformed."""

    def __init__(self, path, reason: str, *, line: int | None = None, field: str | None = None):
        self.path, self.reason, self.line, self.field = str(path), reason, line, field
        where = self.path + (f":{line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{reason}")


class VideoDecodeError(TinyVRError):
    """A video file cannot be decoded into the frames asked for."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(TinyVRError):
    """A checkpoint folder is missing, incomplete or does not match the model."""
