"""Typed errors. The library raises these; only the CLI prints them and maps them to exit codes.

Exit codes (documented in README): 0 ok, 1 checks failed, 2 bad input, 3 environment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """Process exit codes of the `deployer` CLI."""

    OK = 0
    CHECKS_FAILED = 1
    BAD_INPUT = 2
    ENVIRONMENT = 3


class DeployerError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code: ClassVar[ExitCode] = ExitCode.CHECKS_FAILED

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def render(self) -> str:
        """Human-readable text: message, optional details block and a fix hint."""
        parts = [self.message]
        if self.details:
            parts.append(self.details.rstrip())
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class UserError(DeployerError):
    """Bad input from the user: spec, model file, command-line arguments."""

    exit_code = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class SpecIssue:
    """One problem found in a spec, located in its YAML source."""

    path: str  # YAML path, e.g. "models[2].dynamic_batching.preferred_batch_size"
    message: str  # what is wrong
    hint: str = ""  # how to fix it
    value: object = None  # the offending value (None when not applicable)
    file: str = ""
    line: int = 0  # 1-based; 0 = unknown
    column: int = 0  # 1-based; 0 = unknown
    has_value: bool = False

    def format(self) -> str:
        """`file:line:col: path: value X: message — hint`."""
        where = self.file or "<spec>"
        if self.line:
            where += f":{self.line}:{self.column or 1}"
        text = f"{where}: {self.path or '<root>'}: "
        if self.has_value:
            text += f"value {self.value!r}: "
        text += self.message
        if self.hint:
            text += f" — {self.hint}"
        return text


class SpecError(UserError, ValueError):
    """A spec (or a model it points to) is invalid; carries every issue found, not just the first."""

    MAX_SHOWN: ClassVar[int] = 200  # a generated spec with 10,000 bad keys must not print 10,000 lines

    def __init__(self, issues: Sequence[SpecIssue]) -> None:
        self.issues = tuple(issues)
        n = len(self.issues)
        shown = [i.format() for i in self.issues[: self.MAX_SHOWN]]
        if n > self.MAX_SHOWN:
            shown.append(f"... and {n - self.MAX_SHOWN} more (fix these first; all {n} are in SpecError.issues)")
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in spec:\n" + "\n".join(shown))

    def render(self) -> str:
        return self.message


class ModelFileError(UserError):
    """An ONNX (or other model) file cannot be read or does not fit the spec."""


class TemplateError(UserError):
    """A user template failed to render or rendered something that is not the spec's config."""


class RenderMismatchError(DeployerError):
    """A rendered config.pbtxt parsed back differs from the configuration the spec defines."""


class RepositoryError(UserError):
    """The model repository is in a state we cannot act on (e.g. rollback target missing)."""


class EnvironmentProblem(DeployerError):
    """Something the machine lacks or blocks: a binary, an extra, a daemon, a free port."""

    exit_code = ExitCode.ENVIRONMENT


class MissingDependency(EnvironmentProblem):
    """An optional dependency (extra) or external tool is not installed."""


class PortInUse(EnvironmentProblem):
    """A port we were asked to bind is already taken."""


class ServerError(DeployerError):
    """The server started but did not become ready, or a model failed to load (exit 1)."""


class BuildError(DeployerError):
    """An engine build failed."""


class CheckFailed(DeployerError):
    """One or more smoke checks failed."""
