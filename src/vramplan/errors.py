"""Typed errors that carry what a person needs to fix the problem.

The CLI turns each one into a single line and an exit code; ``--debug`` shows the traceback.
Never classify an error by its message text: raise the type that says what happened.
"""

from __future__ import annotations


class VramplanError(Exception):
    """Base class: a problem the user can act on, reported in one line."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(VramplanError):
    """The command line itself is wrong (bad flag value, missing argument)."""

    exit_code = 2


class ModelNotFoundError(VramplanError):
    """The reference names nothing we can resolve."""

    def __init__(self, reference: str, hint: str) -> None:
        super().__init__(f"Model `{reference}` was not found: {hint}")
        self.reference = reference


class ConfigError(VramplanError):
    """A config file exists but cannot be read or understood."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"Config for `{reference}` {reason}")
        self.reference = reference
        self.reason = reason


class UnknownArchitectureError(VramplanError):
    """transformers does not know the config's `model_type`."""

    def __init__(self, reference: str, model_type: str | None, remote_code: bool = False) -> None:
        if model_type is None:
            what = "has no `model_type`"
        else:
            what = f"has `model_type` '{model_type}', which this transformers does not know"
        if remote_code:
            step = "the repo ships its own modelling code: pass --trust-remote-code if you trust it"
        else:
            step = "upgrade transformers (pip install -U transformers), or pass --trust-remote-code if the repo ships code"
        super().__init__(f"Config for `{reference}` {what}; {step}")
        self.reference = reference
        self.model_type = model_type


class BuildError(VramplanError):
    """The library refused to build the model from its config."""

    def __init__(self, reference: str, library: str, reason: str) -> None:
        super().__init__(f"{library} could not build `{reference}` from its config: {reason}")
        self.reference = reference
        self.library = library
        self.reason = reason


class SimulationError(VramplanError):
    """The forward pass could not be simulated on fake tensors."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"Could not simulate the forward pass of `{reference}`: {reason}")
        self.reference = reference
        self.reason = reason
