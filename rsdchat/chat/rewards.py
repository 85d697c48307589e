"""The reward sources a chat builds: by name, reward server and step delimiter, each built once.

`/reward orm http://HOST:PORT` points a served reward model at a server for this chat:
the reward is built with the runtime's `RewardContext`, its backend configs carrying that `reward_url`
(and `reward_model`), so the plugin that talks to the server reads it as if it had been
configured. What a plugin tells the user to do with a flag (`--reward-url …`) is said
here as the command that does it in the chat.

When `/model` puts another model in a role, `forget` takes every source out, to be built
again on the models then loaded (a source may hold either model; rebuilding is cheap).
"""

from __future__ import annotations

import re
from dataclasses import replace

from rsdchat.chat.choice import Choice
from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import RewardSource
from rsdchat.in_force import reward_in_force, stops
from rsdchat.plugins import PluginConfig, backend_plugins, reward_plugins
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


class Rewards:
    """The reward sources built so far (reward servers are asked once per source)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[RewardKey, RewardSource] = {}

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
        return self._built.get(self.key(choice))

    def add(self, choice: Choice, reward: RewardSource) -> None:
        self._built.setdefault(self.key(choice), reward)

    def forget(self) -> dict[RewardKey, RewardSource]:
        """Take every source out (another model is in a role): each is built again when asked for."""
        taken, self._built = self._built, {}
        return taken

    def put_back(self, taken: dict[RewardKey, RewardSource]) -> None:
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
            return self._built[key]
        spec, delta = key[0], key[1]
        delimiter = stops(choice.settings, choice.extras)[0]  # the reply's steps, for a reward that splits it
        context = replace(runtime.reward_context(), configs=self.configs(choice), step_delimiter=delimiter)
        try:
            reward = await in_thread(make_reward, spec, context)
        except ConfigError as exc:
            raise ConfigError(in_chat(str(exc), choice)) from None
        except Exception as exc:  # e.g. a server that does not answer
            raise ConfigError(f"reward {spec}: {in_chat(str(exc), choice) or type(exc).__name__}") from None
        if delta is not None:  # this source judges prose: its default δ is the one measured there
            reward.default_delta = delta
        self._built[key] = reward
        return reward

    async def aclose(self, keep: RewardSource | None = None) -> None:
        """Close every source built here (but `keep`, which its owner closes)."""
        await close(self._built, keep)
        self._built.clear()


async def close(built: dict[RewardKey, RewardSource], keep: RewardSource | None = None) -> None:
    """Close the sources in `built` (but `keep`, which its owner closes)."""
    for source in built.values():
        if source is not keep:
            await source.aclose()
