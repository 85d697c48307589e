"""Errors a user can act on. Each carries the process exit code the CLI uses."""

from __future__ import annotations

import re


class RsdchatError(Exception):
    """Base class: the message is one line that says what is wrong and what to do."""

    exit_code = 1


class ConfigError(RsdchatError):
    """A bad setting, flag, name or file given by the user (exit 2)."""

    exit_code = 2


class BackendError(RsdchatError):
    """A backend failed at run time: server down, model crashed, bad response (exit 1)."""

    exit_code = 1


class ContextFull(BackendError):
    """The conversation leaves no room in a model's context (the user's to shorten, not a fault)."""


_SECRET = re.compile(
    r"\b(?:sk|pk|rk|hf|ghp|gho|github_pat|xox[abpr])[-_][A-Za-z0-9_\-]{12,}"  # vendors' key formats
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"  # an Authorization header's value
)


def looks_secret(text: str) -> bool:
    """Whether `text` holds something shaped like an API key or a bearer token."""
    return bool(_SECRET.search(text))


def redact(text: str, *secrets: str | None) -> str:
    """`text` with the given secret values, and anything shaped like a key, replaced by '***'."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET.sub("***", text)
