"""Locations in spec files and the one exception type that carries them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Location:
    """A 1-based line and column in a spec file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def shifted(self, line_offset: int, column: int) -> "Location":
        """The location `line_offset` lines further down, at `column`."""
        return Location(self.file, self.line + line_offset, column)


class SpecError(Exception):
    """A problem in a spec file, reported as ``file:line:col: error: message``."""

    def __init__(
        self, location: Location | None, message: str, hint: str | None = None
    ):
        self.location = location
        self.message = message
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location is not None else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}error: {self.message}{hint}"


@dataclass(frozen=True)
class SpecWarning:
    """Something in a spec that builds but may not be what was meant,
    reported as ``file:line:col: warning: message``.  The library returns
    them (`Spec.warnings`); the CLI prints them on stderr."""

    location: Location | None
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location is not None else ""
        return f"{where}warning: {self.message}"


class OutputError(OSError):
    """An output path fngen refuses to write: the spec itself, or an
    existing file that is not a regular file (a device, a FIFO, a
    directory, a socket, a link to a file descriptor)."""


class DeviceError(Exception):
    """A device `fngen check` or `fngen bench` was asked for that this
    machine does not have (``cuda`` without a GPU, ``cuda:3`` of two, an
    unknown type): raised before anything runs."""
