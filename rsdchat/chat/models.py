"""`/model`: which draft and target a chat runs with, and another one put in a role while it runs.

`parse_model` reads the command (pure). `ModelSwitch` loads the model the user names off the
event loop (a "loading" line while it does), and only once it is loaded puts it in place of
the old one: the reward sources are built again on the models now loaded, the settings in
force name it (`Choice.set(draft=…)`), the old model is released where its backend
can, and the transcript notes the change with a `change` record that carries the `models`
from then on (the header keeps those the chat started with, as it keeps its first `knobs`).
A load that fails, settings the new model cannot serve (a reward that cannot be built for it),
or a command given while an answer is being written is refused with one line, and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rsdchat.chat.changes import Changes
from rsdchat.chat.choice import Choice
from rsdchat.chat.commands import COMMANDS, split_path
from rsdchat.chat.events import ChatEvent, Listener, Loading, Severity, StateChanged
from rsdchat.chat.rewards import Rewards, close
from rsdchat.chat.transcript import Transcript
from rsdchat.core.errors import ConfigError
from rsdchat.core.protocols import ListsModels, RewardSource
from rsdchat.core.types import Role
from rsdchat.in_force import InForce
from rsdchat.runtime import Runtime, Swap

ROLES = {role.value: role for role in (Role.DRAFT, Role.TARGET)}


@dataclass(frozen=True)
class ModelChoice:
    """`/model draft NAME`: the role, and the model as named (a name the backend knows, or a path)."""

    role: Role
    name: str


def parse_model(rest: str) -> ModelChoice | None:
    """'draft NAME' -> ModelChoice; '' -> None (say which models are loaded); ConfigError otherwise."""
    word, _, name = rest.strip().partition(" ")
    if not word:
        return None
    usage = f"usage: {COMMANDS['model'].usage}"
    role = ROLES.get(word.lower())
    if role is None:
        raise ConfigError(f"{usage}: draft or target first, got {word!r}")
    name = split_path(name)  # a path with spaces in quotes
    if not name:
        raise ConfigError(f"{usage}: which {role.value} model? a name the backend knows, or a path")
    return ModelChoice(role, name)


def loaded_models(runtime: Runtime) -> dict[str, str]:
    """The backend and the models loaded, as a transcript keeps them (`models`)."""
    return {k: v for k, v in runtime.describe().items() if k in ("backend", "draft", "target")}


def models_in_force(transcript: Transcript) -> dict[str, str]:
    """The models the chat was last written with: the header's, as later `/model` changes left them."""
    models: dict[str, str] = {}
    for record in transcript.records:
        if record["type"] in ("session", "change") and isinstance(record.get("models"), dict):
            models = {k: v for k, v in record["models"].items() if isinstance(v, str)}
    return models


def written_with(transcript: Transcript, loaded: dict[str, str]) -> list[str]:
    """'draft X (now Y)' for each role the chat was last written with another model than `loaded`'s."""
    models = models_in_force(transcript)
    return [
        f"{role} {models[role]} (now {loaded[role]})"
        for role in ROLES
        if models.get(role) and loaded.get(role) and models[role] != loaded[role]
    ]


def describe_models(runtime: Runtime) -> str:
    """What `/model` alone says: the models loaded, with their backends, and the names those know."""
    settings, engine = runtime.settings, runtime.engine
    plugins = {role: settings.backend_for(role) for role in ROLES.values()}
    loaded = []
    for role, plugin in plugins.items():
        model = getattr(engine, role.value)
        name = model.info.name if model is not None else f"{getattr(settings, role.value)}, not loaded"
        loaded.append(f"{role.value} {name} ({plugin})")
    lines = [" · ".join(loaded)]
    for plugin in dict.fromkeys(plugins.values()):
        backend = runtime.backends.get(plugin)
        if isinstance(backend, ListsModels):
            lines.append(f"{plugin} knows: {', '.join(backend.model_names())}; or give a path")
        else:
            lines.append(f"{plugin}: a name it knows or a path, as --draft and --target take")
    lines.append("/model draft NAME or /model target NAME loads another")
    return "\n".join(lines)


class _Chat(Protocol):
    """The parts of a chat session that `/model` uses."""

    choice: Choice
    transcript: Transcript
    listener: Listener

    @property
    def answering(self) -> bool: ...
    @property
    def reward(self) -> RewardSource | None: ...
    def in_force(self) -> InForce: ...
    async def change(self, new: Choice, *, record: bool = True) -> None: ...
    def notify(self, text: str, severity: Severity = "information", title: str = "") -> None: ...


class ModelSwitch:
    """`/model` in one chat: says which models it runs with, or puts another in a role."""

    def __init__(self, chat: _Chat, rewards: Rewards, changes: Changes) -> None:
        self.chat = chat
        self.rewards = rewards  # the chat's reward sources: those built on a swapped model go
        self.changes = changes  # where the change is noted
        self.loading: str | None = None  # "draft NAME" while it loads

    async def command(self, rest: str, runtime: Runtime) -> None:
        """`/model [draft|target NAME]`; ConfigError (one line, nothing changed) if it cannot be done."""
        wanted = parse_model(rest)
        if wanted is None:
            self.chat.notify(describe_models(runtime), title="models")
        else:
            await self.switch(wanted, runtime)

    async def switch(self, wanted: ModelChoice, runtime: Runtime) -> None:
        """Load `wanted` and put it in its role; ConfigError (one line, nothing changed) if it cannot be."""
        role, name, chat = wanted.role, wanted.name, self.chat
        if chat.answering:
            raise ConfigError(f"stop the answer first (Esc), then /model {role.value} {name}")
        if self.loading:
            raise ConfigError(f"{self.loading} is still loading; wait for it")
        old = getattr(runtime.engine, role.value)
        if old is not None and getattr(runtime.settings, role.value) == name:
            chat.notify(f"{role.value} {name} is loaded already", title="models")
            return
        was = old.info.name if old is not None else f"{getattr(runtime.settings, role.value)} (not loaded)"
        self.loading = f"{role.value} {name}"
        self._say(Loading(f"loading {role.value} {name}…", "loading"))
        self._say(StateChanged())
        try:
            swap = await runtime.swap(role, name)
            await self._put_in_force(swap, runtime)
        except ConfigError as exc:
            kept = f"the {role.value} is still {was}"
            self._say(Loading(f"could not switch to {role.value} {name}: {kept}", "failed"))
            raise ConfigError(f"{exc}; {kept}") from None
        finally:
            self.loading = None
            self._say(StateChanged())
        now = swap.model.info.name
        fields = {
            "models": loaded_models(runtime),  # from here on; the header keeps those the chat started with
            "knobs": chat.choice.to_dict(),
            "in_force": chat.in_force().to_dict(),
        }
        self.changes.note_models(chat.transcript, f"{role.value} {was} → {now}", fields)
        self._say(Loading(f"{role.value} {now} ready (was {was})", "ready"))

    async def _put_in_force(self, swap: Swap, runtime: Runtime) -> None:
        """The settings name the new model, its rewards are built for it; else the swap is undone."""
        chat, role = self.chat, swap.role
        taken = self.rewards.forget()
        try:
            await chat.change(chat.choice.set(**{role.value: swap.name}), record=False)
        except ConfigError as exc:
            built = self.rewards.forget()  # for the new model, before the change was refused
            await runtime.undo(swap)
            self.rewards.put_back(taken)
            await close(built)
            raise ConfigError(f"{role.value} {swap.name} cannot be used: {exc}") from None
        await close(taken, keep=runtime.reward)  # the runtime's own is closed with it
        await runtime.keep(swap)

    def _say(self, event: ChatEvent) -> None:
        self.chat.listener(event)
