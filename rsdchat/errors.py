"""Errors a user can act on. Each carries the process exit code the CLI uses."""

from __future__ import annotations


class RsdchatError(Exception):
    """Base class: the message is one line that says what is wrong and what to do."""

    exit_code = 1


class ConfigError(RsdchatError):
    """A bad setting, flag, name or file given by the user (exit 2)."""

    exit_code = 2


class BackendError(RsdchatError):
    """A backend failed at run time: server down, model crashed, bad response (exit 1)."""

    exit_code = 1
