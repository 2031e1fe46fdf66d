"""The simulator's one exception hierarchy.

SimError
├── ConfigError      a profile or workload file is wrong; names the file and the field
└── RunError         a run could not be carried out (a process died, a port was taken)
"""

from __future__ import annotations


class SimError(Exception):
    """Base of every error simulate.py reports as one line."""


class ConfigError(SimError):
    """A profile or workload file has a missing, mistyped or out-of-range field."""

    def __init__(self, source: str, field: str, problem: str, *, message: str | None = None) -> None:
        super().__init__(message or f"{source}: field '{field}' {problem}")
        self.source = source
        self.field = field
        self.problem = problem


class RunError(SimError):
    """The run itself failed; the message says what to check."""
