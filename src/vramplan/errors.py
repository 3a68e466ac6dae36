"""Typed errors that carry what a person needs to fix the problem.

The CLI turns each one into a single line and an exit code; ``--debug`` shows the traceback.
Never classify an error by its message text: raise the type that says what happened.
"""

from __future__ import annotations


def one_line(exc: BaseException, *, typed: bool = False) -> str:
    """An exception's text on one line (its type name when it has no text), for a per-model reason.

    With `typed`, exceptions that are not ours are prefixed with their type (`KeyError: 'x'`);
    ours are their own message. torch appends its C++ stack (`Exception raised from ... frame #0: ...`)
    to some messages: that part is cut.
    """
    if typed and not isinstance(exc, VramplanError):
        text = f"{type(exc).__name__}: {strip_cpp_frames(str(exc)).strip()}"
    else:
        text = strip_cpp_frames(str(exc)).strip() or type(exc).__name__
    return " ".join(text.split())


def printable(text: str) -> str:
    """Text for one terminal line: control and other unprintable characters (a name may hold them) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def strip_cpp_frames(text: str) -> str:
    """Text before torch's C++ stack trace, if it carries one."""
    return text.split("Exception raised from ", 1)[0].rstrip()


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


class BuildLimitError(VramplanError):
    """A build went past vramplan's bound on modules or time (vramplan.build_checks)."""

    def __init__(self, reference: str, what: str) -> None:
        super().__init__(
            f"Refused to build `{reference}`: {what}, past vramplan's bound for one build "
            "(check the config's layer and expert counts)"
        )
        self.reference = reference
        self.what = what


class SimulationError(VramplanError):
    """The forward pass could not be simulated on fake tensors."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"Could not simulate the forward pass of `{reference}`: {reason}")
        self.reference = reference
        self.reason = reason


class HubError(VramplanError):
    """A Hugging Face Hub look-up failed; the message says what to do next."""

    def __init__(self, repo_id: str, message: str) -> None:
        super().__init__(message)
        self.repo_id = repo_id


class GatedRepoAccessError(HubError):
    """The repo is gated and this token (or no token) has no access."""

    def __init__(self, repo_id: str, has_token: bool) -> None:
        who = "your token has no access yet" if has_token else "no token was sent"
        super().__init__(
            repo_id,
            f"Repo `{repo_id}` is gated and {who}: accept its terms on its Hub page, then authenticate "
            "(set HF_TOKEN or run `hf auth login`). Catalogued models need no token: see `vramplan list`",
        )


class RepoNotFoundError(HubError):
    """No such repo, or a private one this token cannot see."""

    def __init__(self, repo_id: str, has_token: bool) -> None:
        hint = (
            "check the id; if it is private, your token has no access"
            if has_token
            else "check the id; if it is private, authenticate (set HF_TOKEN or run `hf auth login`)"
        )
        super().__init__(repo_id, f"Repo `{repo_id}` was not found on the Hub: {hint}")


class RevisionNotFoundError(HubError):
    def __init__(self, repo_id: str, revision: str) -> None:
        super().__init__(repo_id, f"Revision `{revision}` of `{repo_id}` was not found on the Hub: check --revision")


class MissingConfigError(HubError):
    def __init__(self, repo_id: str) -> None:
        super().__init__(
            repo_id,
            f"Repo `{repo_id}` has no config.json: it is not a transformers model; "
            "for a timm model pass --library timm",
        )


class NoLibraryMetadataError(HubError):
    def __init__(self, repo_id: str) -> None:
        super().__init__(
            repo_id,
            f"Model `{repo_id}` does not have any library metadata on the Hub: "
            "pass --library transformers or --library timm",
        )


class UnsupportedLibraryError(HubError):
    def __init__(self, repo_id: str, library: str) -> None:
        super().__init__(
            repo_id,
            f"Model `{repo_id}` is a `{library}` model on the Hub; vramplan builds transformers and timm models: "
            "pass --library transformers or --library timm if one of them can build it",
        )


class HubUnavailableError(HubError):
    """The Hub answered with a server error, or asked us to slow down (429, with Retry-After)."""

    def __init__(self, repo_id: str, status: int, endpoint: str, retry_after: str | None = None) -> None:
        if status == 429:
            wait = f"wait {retry_after} s (its Retry-After)" if retry_after else "wait a while"
            text = f"The Hub at {endpoint} is limiting requests (HTTP 429) for `{repo_id}`: {wait} and try again"
        else:
            later = f"try again in {retry_after} s (its Retry-After)" if retry_after else "try again later"
            text = f"The Hub at {endpoint} answered HTTP {status} for `{repo_id}`: {later}"
        super().__init__(repo_id, text + ", or set HF_HUB_OFFLINE=1 to use what is cached")
        self.status = status


class HubUnreachableError(HubError):
    """Network down, host unknown, connection refused or cut, or no answer within the timeout.

    `detail`, when given, says which of these happened (DNS, refused, cut mid-answer, redirected elsewhere);
    without it the reason is the HTTP library's exception type and the wait the timeout.
    """

    def __init__(self, repo_id: str, endpoint: str, timeout: float | None, reason: str,
                 detail: str | None = None) -> None:
        within = f" within {timeout:g} s" if timeout is not None else ""
        what = f" for `{repo_id}`: {detail}" if detail else f"{within} for `{repo_id}` ({reason})"
        super().__init__(
            repo_id,
            f"Could not reach the Hub at {endpoint}{what}: check the network and HF_ENDPOINT, "
            "raise --timeout, or set HF_HUB_OFFLINE=1 to use what is cached",
        )


class NotAHubError(HubError):
    """Something answered, but not as the Hub does: an HTML page, a proxy's 401/404, a file without Hub headers."""

    def __init__(self, repo_id: str, endpoint: str, what: str) -> None:
        super().__init__(
            repo_id,
            f"The server at {endpoint} did not answer as a Hugging Face Hub for `{repo_id}` ({what}): "
            "check HF_ENDPOINT, and any proxy or captive portal between you and the Hub",
        )


class HubBadAnswerError(HubError):
    """The Hub's answer was cut short or is not valid JSON."""

    def __init__(self, repo_id: str, endpoint: str, what: str) -> None:
        super().__init__(
            repo_id,
            f"The Hub at {endpoint} sent an incomplete or malformed answer for `{repo_id}` ({what}): "
            "try again; if it persists, check any proxy between you and the Hub",
        )


class OfflineNotCachedError(HubError):
    def __init__(self, repo_id: str) -> None:
        super().__init__(
            repo_id,
            f"`{repo_id}` is neither catalogued nor in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
            "forbids asking the Hub: unset HF_HUB_OFFLINE, or run once online to cache its config.json",
        )
