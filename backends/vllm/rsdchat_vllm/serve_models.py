"""`rsdchat serve-models`: keep the vLLM servers up between commands.

It starts the servers the current settings need (draft, target, and the reward model
when the reward is served over HTTP), prints the `--backend openai` flags and the TOML
that use them, and stays in the foreground until Ctrl-C or SIGTERM, which stop them
all. A server that dies meanwhile stops the rest and ends the command (exit 1).
"""

from __future__ import annotations

import asyncio
import shlex
from typing import TYPE_CHECKING

import typer

from rsdchat.plugin_api import Given, Role, run, with_settings

if TYPE_CHECKING:
    from rsdchat.plugin_api import Settings
    from rsdchat_vllm.launcher import Launcher
    from rsdchat_vllm.process import Server

WATCH = 1.0  # seconds between checks that every server still runs
HTTP_REWARDS = ("qwen-prm", "skywork-prm", "orm")  # the openai plugin's, served by vLLM


def register(app: typer.Typer) -> None:
    app.command("serve-models")(serve_models)


@with_settings
def serve_models(*, _settings_given: Given) -> None:
    """Start the vLLM servers for the current settings and keep them up until Ctrl-C.

    Prints the `--backend openai` flags and config lines with which other commands use them.

    [dim]Example:[/dim]

      rsdchat serve-models --draft Qwen/Qwen2.5-Math-1.5B-Instruct --reward qwen-prm
    """
    run(_serve(_settings_given.settings()), interrupted="stopped the vLLM servers")


def plan(settings: Settings) -> list[tuple[Role, str]]:
    """(role, model) for each server the settings need."""
    from rsdchat.plugin_api import split_spec
    from rsdchat_vllm.config import VllmConfig
    from rsdchat_vllm.rewards import MODELS

    config = settings.backend_config("vllm")
    assert isinstance(config, VllmConfig)
    roles = settings.mode.roles
    models: list[Role] = [Role.DRAFT, Role.TARGET]
    wanted = [(role, str(getattr(settings, role.value))) for role in models if role in roles]
    served = [name for name in split_spec(settings.reward) if _plain(name) in HTTP_REWARDS]
    if Role.REWARD in roles and served:
        wanted.append((Role.REWARD, config.reward_model or MODELS[f"vllm-{_plain(served[0])}"]))
    return wanted


def _plain(reward: str) -> str:
    return reward.removeprefix("vllm-")


async def _serve(settings: Settings) -> None:
    from rsdchat.plugin_api import in_thread
    from rsdchat_vllm.config import VllmConfig
    from rsdchat_vllm.launcher import Launcher

    config = settings.backend_config("vllm")
    assert isinstance(config, VllmConfig)
    launcher = Launcher(config)
    try:
        for role, model in plan(settings):
            await in_thread(launcher.start, role, model)
        print(usage(settings, launcher), flush=True)
        typer.echo("serving; Ctrl-C stops every server", err=True)
        while True:
            await asyncio.sleep(WATCH)
            for server in launcher.servers:
                if server.exited() is not None:
                    raise server.died()
    finally:
        launcher.close()


def usage(settings: Settings, launcher: Launcher) -> str:
    """The flags and the TOML that use the running servers."""
    servers: dict[Role, Server] = {s.role: s for s in launcher.servers}
    flags = ["rsdchat", "solve", "--backend", "openai"]
    core: list[tuple[str, str]] = [("backend", "openai")]
    table: list[tuple[str, str]] = []
    for role, server in servers.items():
        if role is Role.REWARD:
            reward = "*".join(_plain(name) for name in settings.reward.split("*"))
            flags += ["--reward", reward, "--reward-url", server.url, "--reward-model", server.model]
            core.append(("reward", reward))
            table += [("reward_url", server.url), ("reward_model", server.model)]
        else:
            flags += [f"--{role.value}", server.model, f"--{role.value}-url", server.url]
            core.append((role.value, server.model))
            table.append((f"{role.value}_url", server.url))
    lines = [f"# {s.role.value}: {s.model} at {s.url} (log {s.log_path})" for s in servers.values()]
    lines += ["", "# use them with:", shlex.join(flags) + ' "…"', "", "# or in the config file:"]
    lines += [f"{key} = {_quoted(value)}" for key, value in core]
    lines += ["", "[backends.openai]", *(f"{key} = {_quoted(value)}" for key, value in table)]
    return "\n".join(lines)


def _quoted(value: str) -> str:
    import json

    return json.dumps(value)
