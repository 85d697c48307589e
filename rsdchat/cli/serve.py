"""`rsdchat serve`: RSD behind an OpenAI-compatible, streaming HTTP endpoint (docs/serve.md)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Annotated

import typer
from rich.console import Console

from rsdchat.cli.options import Given, with_settings
from rsdchat.core.errors import ConfigError, RsdchatError

API_KEY_ENV = "RSDCHAT_API_KEY"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


@with_settings
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            help=f"Clients must send Authorization: Bearer KEY (or set {API_KEY_ENV}).",
            envvar=API_KEY_ENV,
            show_envvar=False,
        ),
    ] = None,
    max_running: Annotated[int, typer.Option(help="Requests answered at once.", min=1)] = 8,
    max_waiting: Annotated[
        int, typer.Option(help="Requests that wait for a slot; past that, 429 with Retry-After.", min=0)
    ] = 64,
    max_body: Annotated[int, typer.Option(help="Largest request body, in bytes (413 past it).", min=1024)] = (
        1 << 20
    ),
    send_timeout: Annotated[
        float, typer.Option(help="Seconds a stream waits for a client that does not read before ending it.")
    ] = 60.0,
    grace: Annotated[
        float, typer.Option(help="On SIGTERM or Ctrl-C, seconds running answers get to finish.", min=0)
    ] = 30.0,
    *,
    _settings_given: Given,
) -> None:
    """Serve RSD as an OpenAI-compatible API: /v1/chat/completions and /v1/completions, streamed or not.

    Models: rsd, rsd-target-only, rsd-draft-only (one configuration each).

    A request may set δ, the weighting, the reward and the budgets in an `rsd` object.

    Each step's author and reward come back in `rsd` fields that other clients ignore.

    [dim]Examples:[/dim]

      rsdchat serve --port 8000 --api-key "$(openssl rand -hex 16)"

      curl -N localhost:8000/v1/chat/completions -d '{"model": "rsd", "stream": true, "messages": [...]}'
    """
    err = Console(stderr=True)
    settings = _settings_given.settings()
    if api_key is not None and not api_key.strip():
        raise ConfigError(f"--api-key ({API_KEY_ENV}) is empty")
    if not _loopback(host) and api_key is None:
        err.print(
            f"[yellow]warning:[/yellow] listening on {host} without an API key: anyone who can reach "
            f"it can use the models (set --api-key or {API_KEY_ENV})",
            highlight=False,
        )
    try:
        from rsdchat.serve.answering import Limits
        from rsdchat.serve.web import serve
    except ImportError as exc:  # the ASGI stack is an extra
        raise ConfigError(f"rsdchat serve needs {exc.name}: pip install 'rsdchat[serve]'") from None

    limits = Limits(max_running, max_waiting, max_body, send_timeout, api_key)
    try:
        code = asyncio.run(serve(settings, limits, host, port, grace, err))
    except RsdchatError as exc:
        err.print(f"[bold red]rsdchat:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
