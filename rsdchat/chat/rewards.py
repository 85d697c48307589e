"""The reward sources a chat builds: by name, reward server and step delimiter, each built once.

`/reward orm http://HOST:PORT` points a served reward model at a server for this chat:
the reward is built with the runtime's `RewardContext`, its backend configs carrying that `reward_url`
(and `reward_model`), so the plugin that talks to the server reads it as if it had been
configured. What a plugin tells the user to do with a flag (`--reward-url …`) is said
here as the command that does it in the chat.

Each source remembers which of the models its factory read (`draft-prm` the draft,
`target-logprob` the target, `arithmetic` none): when `/model` puts another model in a
role, `forget` takes out the sources built on the old one, to be built again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rsdchat.chat.choice import Choice
from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import RewardSource
from rsdchat.core.types import Role
from rsdchat.in_force import reward_in_force, stops
from rsdchat.plugins import PluginConfig, RewardContext, backend_plugins, reward_plugins
from rsdchat.rewards import make_reward
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.threads import in_thread

RewardKey = tuple[str, float | None, str | None, str | None, str]
"""The spec, its default δ where the chat's style gives it one (None: its own), server URL, served
model, step delimiter."""


def in_chat(message: str, choice: Choice) -> str:
    """A plugin's advice in command-line terms, said as what to type in the chat."""
    spec, url = choice.settings.reward, choice.extras.reward_url or "http://HOST:PORT"
    if re.match(r"setting reward_url:", message):
        return f"reward {spec} needs the reward server's URL: type /reward {spec} http://HOST:PORT"
    typed = f"type /reward {spec} {url} MODEL"
    message = re.sub(r"pass --reward(-model)? with one of those names", typed, message)
    if re.match(r"setting reward_model:", message):
        message += f": {typed}"
    return message


MODELS = (Role.DRAFT.value, Role.TARGET.value)


@dataclass(frozen=True)
class _Watched(RewardContext):
    """The context a reward source is built with, noting which models (`MODELS`) are read from it."""

    read: set[str] = field(default_factory=set, compare=False, repr=False)

    def __getattribute__(self, name: str) -> Any:
        if name in MODELS:  # `need(role)` reads them too; so does `dataclasses.replace` (both, then)
            object.__getattribute__(self, "read").add(name)
        return object.__getattribute__(self, name)


@dataclass
class Built:
    """A reward source, and the models it was built on ("draft", "target")."""

    source: RewardSource
    reads: set[str]  # as its factory read them from its context (still read later, if it keeps it)


class Rewards:
    """The reward sources built so far (reward servers are asked once per source)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[RewardKey, Built] = {}

    def key(self, choice: Choice) -> RewardKey:
        """What tells reward sources apart: a served one also reads the step delimiter.

        The spec is the one in force (`reward_in_force`: prose may be judged by the chat's default),
        and a source built for prose may carry its prose δ as its default.
        """
        spec, delta = reward_in_force(choice.settings, choice.extras)
        plugins = reward_plugins()
        parts = [part.strip() for part in spec.split("*")]
        served = any(part in plugins and plugins[part].cost == "reward model" for part in parts)
        delimiter = stops(choice.settings, choice.extras)[0] if served else ""
        return (spec, delta, choice.extras.reward_url, choice.extras.reward_model, delimiter)

    def get(self, choice: Choice) -> RewardSource | None:
        built = self._built.get(self.key(choice))
        return built.source if built is not None else None

    def add(self, choice: Choice, reward: RewardSource) -> None:
        """A source built elsewhere (the runtime's): what it reads is not known, so both models."""
        self._built.setdefault(self.key(choice), Built(reward, set(MODELS)))

    def forget(self, role: Role) -> dict[RewardKey, Built]:
        """Take out the sources built on the `role` model (they are built again when asked for)."""
        taken = {key: built for key, built in self._built.items() if role.value in built.reads}
        for key in taken:
            del self._built[key]
        return taken

    def put_back(self, taken: dict[RewardKey, Built]) -> None:
        """What `forget` took out is back (a model swap that was undone)."""
        self._built.update(taken)

    def configs(self, choice: Choice) -> dict[str, PluginConfig]:
        """The backends' settings, with the chat's reward server in each config that has one."""
        configs = dict(self.settings.backends)
        update = {"reward_url": choice.extras.reward_url, "reward_model": choice.extras.reward_model}
        update = {name: value for name, value in update.items() if value is not None}
        if not update:
            return configs
        servers = [name for name, p in backend_plugins().items() if "reward_url" in p.config.model_fields]
        if not servers:
            raise ConfigError("a reward server needs a backend that talks to one: pip install rsdchat-openai")
        for name in servers:
            configs[name] = self.settings.backend_config(name).model_copy(update=update)
        return configs

    async def build(self, choice: Choice, runtime: Runtime) -> RewardSource:
        """The reward `choice` names, built once (off the event loop: it may ask a server)."""
        key = self.key(choice)
        if key in self._built:
            return self._built[key].source
        spec, delta = key[0], key[1]
        delimiter = stops(choice.settings, choice.extras)[0]  # the reply's steps, for a reward that splits it
        models = runtime.reward_context()
        context = _Watched(models.draft, models.target, self.configs(choice), delimiter, models.options)
        try:
            reward = await in_thread(make_reward, spec, context)
        except ConfigError as exc:
            raise ConfigError(in_chat(str(exc), choice)) from None
        except Exception as exc:  # e.g. a server that does not answer
            raise ConfigError(f"reward {spec}: {in_chat(str(exc), choice) or type(exc).__name__}") from None
        if delta is not None:  # this source judges prose: its default δ is the one measured there
            reward.default_delta = delta
        self._built[key] = Built(reward, context.read)
        return reward

    async def aclose(self, keep: RewardSource | None = None) -> None:
        """Close every source built here (but `keep`, which its owner closes)."""
        await close(self._built, keep)
        self._built.clear()


async def close(built: dict[RewardKey, Built], keep: RewardSource | None = None) -> None:
    """Close the sources in `built` (but `keep`, which its owner closes)."""
    for each in built.values():
        if each.source is not keep:
            await each.source.aclose()
