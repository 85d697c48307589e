"""`rsdchat doctor`: for each role the settings configure, is its model there and what can it do?

`diagnose(settings)` returns one `RoleCheck` per role (draft, target, reward, as the
mode needs them); `render(checks)` makes a Rich table and `to_json(checks)` a
JSON-able dict. Backends that know more about their servers (reachability per
URL, served models, APIs) implement `Diagnosable`; others are checked by loading
the model and writing one token. Backends whose model files can be checked in full
(a whole-file checksum, too slow for every start) implement `Verifiable`. Reward
sources may implement `DiagnosableReward`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rich.table import Table

from rsdchat.core.errors import RsdchatError
from rsdchat.core.protocols import Backend, LogprobModel, RewardSource, StepGenerator
from rsdchat.core.types import Context, Message, Role, StepRequest
from rsdchat.in_force import in_force
from rsdchat.threads import in_thread

if TYPE_CHECKING:
    from rsdchat.settings import Settings


@dataclass(frozen=True)
class RoleCheck:
    """What was found for one role. None means "not checked" or "does not apply"."""

    role: str  # "draft" | "target" | "reward"
    backend: str  # plugin name, or "local" for a reward computed in process
    model: str
    location: str = ""  # server URL(s) or model file
    reachable: bool | None = None
    model_served: bool | None = None
    streaming: bool | None = None  # tokens arrive as they are written
    logprobs: bool | None = None  # can score a given text (LogprobModel)
    reward_api: bool | None = None  # the reward endpoint answered a scoring request
    latency_ms: float | None = None  # one small round trip
    error: str | None = None  # one line: what is wrong and what to do
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and False not in (self.reachable, self.model_served, self.reward_api)

    def replace(self, **changes: Any) -> RoleCheck:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["notes"] = list(self.notes)
        data["latency_ms"] = None if self.latency_ms is None else round(self.latency_ms, 1)
        data["ok"] = self.ok
        return data


@runtime_checkable
class Diagnosable(Protocol):
    """A backend that checks its own servers for a role."""

    async def diagnose(self, role: Role, model: str) -> RoleCheck: ...


@runtime_checkable
class Verifiable(Protocol):
    """A backend that checks a role's model file in full (and repairs what it can), blocking.

    Returns a note saying what was checked or repaired; raises an RsdchatError when the model
    cannot be used.
    """

    def verify(self, role: Role, model: str) -> str: ...


@runtime_checkable
class DiagnosableReward(Protocol):
    """A reward source that checks its own server."""

    async def diagnose(self) -> RoleCheck: ...


async def diagnose(settings: Settings) -> list[RoleCheck]:
    """Check every role `settings` needs; never raises for a broken role (it gets an `error`)."""
    from rsdchat.plugins import RewardContext, load_backend
    from rsdchat.rewards import make_reward

    backends: dict[str, Backend] = {}
    models = [role for role in settings.mode.roles if role is not Role.REWARD]
    try:
        for role in models:  # create the backends first (no model is loaded yet)
            name = settings.backend_for(role)
            if name not in backends:
                with contextlib.suppress(RsdchatError):
                    backends[name] = load_backend(name, settings.backends)

        async def one(role: Role) -> tuple[RoleCheck, StepGenerator | None]:
            name = settings.backend_for(role)
            model = settings.draft if role is Role.DRAFT else settings.target
            if name not in backends:
                try:
                    load_backend(name, settings.backends)
                except RsdchatError as exc:
                    return RoleCheck(role.value, name, model, error=str(exc)), None
            return await _check_model(backends[name], name, role, model)

        found = await asyncio.gather(*(one(role) for role in models))  # every role at once
        checks = [check for check, _ in found]
        generators: dict[Role, StepGenerator] = {
            role: gen for role, (_, gen) in zip(models, found, strict=True) if gen is not None
        }
        if Role.REWARD in settings.mode.roles:
            context = RewardContext(
                generators.get(Role.DRAFT),
                generators.get(Role.TARGET),
                settings.backends,
                settings.step_delimiter,
                settings.options(),
            )
            try:
                reward = await in_thread(make_reward, settings.reward, context)
            except RsdchatError as exc:
                checks.append(RoleCheck(Role.REWARD.value, "-", settings.reward, error=str(exc)))
            else:
                checks += await _check_reward(reward, settings, generators)
    finally:
        for backend in backends.values():
            await backend.aclose()
    return checks


async def _check_model(
    backend: Backend, name: str, role: Role, model: str
) -> tuple[RoleCheck, StepGenerator | None]:
    """The model file checked in full where the backend can, then the backend's own diagnosis,
    or: load the model and time one token."""
    verified: tuple[str, ...] = ()
    if isinstance(backend, Verifiable):
        try:
            verified = (await in_thread(backend.verify, role, model),)
        except RsdchatError as exc:
            return RoleCheck(role.value, name, model, error=str(exc)), None
    if isinstance(backend, Diagnosable):
        check = await backend.diagnose(role, model)
        check = check.replace(notes=(*check.notes, *verified))
        if not check.ok:
            return check, None
    try:
        generator = await in_thread(backend.generator, role, model)
    except RsdchatError as exc:
        return RoleCheck(role.value, name, model, error=str(exc), notes=verified), None
    if isinstance(backend, Diagnosable):
        return check, generator
    try:
        streamed, latency_ms = await time_tiny_step(generator, max_tokens=2)
    except RsdchatError as exc:
        return RoleCheck(role.value, name, model, model_served=True, error=str(exc)), None
    return RoleCheck(
        role.value,
        name,
        generator.info.name,
        model_served=True,
        streaming=streamed,
        logprobs=isinstance(generator, LogprobModel),
        latency_ms=latency_ms,
        notes=("runs in process", *verified),
    ), generator


async def time_tiny_step(generator: StepGenerator, *, max_tokens: int) -> tuple[bool, float]:
    """Write a few tokens: whether they streamed, and how many milliseconds it took."""
    pieces: list[str] = []
    started = time.perf_counter()
    hello = Context((Message("user", "Say hello."),))
    await generator.generate(hello, StepRequest(max_tokens=max_tokens), pieces.append)
    return bool(pieces), (time.perf_counter() - started) * 1000


async def _check_reward(
    reward: RewardSource, settings: Settings, generators: dict[Role, StepGenerator]
) -> list[RoleCheck]:
    """One row per reward model on a server; one row for the parts computed in process; and
    whether what `solve` will ask of the models (the weighting's log-probabilities, a δ within
    the reward's range) can be done."""
    from rsdchat.core.engine import Engine
    from rsdchat.rewards import Product

    parts = reward.parts if isinstance(reward, Product) else (reward,)  # checked part by part
    checks = []
    try:
        engine = Engine(draft=generators.get(Role.DRAFT), target=generators.get(Role.TARGET))
        if engine.draft is not None and engine.target is not None:
            try:
                engine.check(in_force(settings, reward).policy)
            except RsdchatError as exc:
                checks.append(
                    RoleCheck("policy", "-", in_force(settings, reward).policy.describe(), error=str(exc))
                )
        for part in parts:
            if isinstance(part, DiagnosableReward):
                checks.append(await part.diagnose())
        local = [p.name for p in parts if not isinstance(p, DiagnosableReward)]
        if local:
            checks.append(
                RoleCheck(Role.REWARD.value, "local", "*".join(local), notes=("computed in process",))
            )
    finally:
        await reward.aclose()
    return checks


_CHECKS = (
    ("reachable", "reachable"),
    ("model_served", "model served"),
    ("streaming", "streaming"),
    ("logprobs", "log-probabilities"),
    ("reward_api", "reward API"),
)


def render(checks: list[RoleCheck]) -> Table:
    """One row per role: the model and where it runs, the checks that apply, latency, notes."""
    table = Table(title="rsdchat doctor", show_lines=True)
    table.add_column("role", no_wrap=True)
    table.add_column("model")
    table.add_column("checks", no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    table.add_column("notes")
    for check in checks:
        where = " · ".join(part for part in (check.backend, check.location) if part)
        marks = [
            f"[green]✓[/] {label}" if value else f"[red]✗[/] {label}"
            for field, label in _CHECKS
            if (value := getattr(check, field)) is not None
        ]
        table.add_row(
            f"[bold]{check.role}[/]" if check.ok else f"[bold red]{check.role}[/]",
            f"{check.model}\n[dim]{where}[/]",
            "\n".join(marks) or "[dim]–[/]",
            "" if check.latency_ms is None else f"{check.latency_ms:.0f} ms",
            f"[red]{check.error}[/]" if check.error else "\n".join(check.notes),
        )
    return table


def to_json(checks: list[RoleCheck]) -> dict[str, Any]:
    """`--json`: {"ok": all roles fine, "roles": [per-role dicts]}."""
    return {"ok": all(check.ok for check in checks), "roles": [check.to_dict() for check in checks]}
