"""A chat without any UI: ask, stop, change settings, save, load; it tells a listener what happened.

The session holds the state — the knobs, the policy in force, the transcript, the running
costs — and hands the engine a `PolicySource` for each answer. A change made while an
answer is being written is *staged*; the engine asks the source at the start of every
step, and that is where a staged change goes into force and is noted in the transcript.
So "applies from the next step" holds by construction, for the reward source too.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from rsdchat.chat.answer import Answer
from rsdchat.chat.changes import Changes
from rsdchat.chat.commands import SETTINGS_COMMANDS, InForce, change_knobs, parse_command, split_path
from rsdchat.chat.events import (
    ChatEvent,
    Cleared,
    EngineUpdate,
    Listener,
    Loading,
    Notice,
    Replayed,
    Severity,
    StateChanged,
    TurnFinished,
    TurnStarted,
    ignore,
)
from rsdchat.chat.knobs import Knobs, nudge_delta
from rsdchat.chat.status import Status
from rsdchat.chat.transcript import Transcript, default_path, user_record
from rsdchat.errors import ConfigError
from rsdchat.events import Event, StepDone
from rsdchat.policy import Mode, Policy, PolicySource
from rsdchat.prompts import build_messages
from rsdchat.protocols import RewardSource, StepGenerator
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.settings import Settings
from rsdchat.trace import Acceptance, Ledger, Trace


class ChatSession:
    """One conversation with the models. Use it from one event loop."""

    def __init__(self, settings: Settings, *, runtime: Runtime | None = None, listener: Listener = ignore):
        self.settings = settings
        self.runtime = runtime
        self.listener = listener
        self.knobs = Knobs.from_settings(settings)
        self.transcript = Transcript.start(settings, self.knobs, {})
        self.turn = 0  # the question being answered, or the last one
        self.load_error: str | None = None  # why the models could not be loaded
        self.policy_error: str | None = None  # why the knobs could not be put in force at open
        self.spent = Ledger()  # finished answers
        self.acceptance = Acceptance()  # over the whole chat
        self._owns_runtime = runtime is None
        self._rewards: dict[str, RewardSource] = {}  # reward sources built so far, by spec
        self._pending: Knobs | None = None  # from a transcript loaded before the models were
        self._check_models_at_open = False  # ditto: compare its models once they are loaded
        self._changes = Changes(self._emit)  # the policy in force, and changes staged for the next step
        self._answer: Answer | None = None  # the answer being written
        self._task: asyncio.Future[Trace] | None = None
        self._stopping = False

    # -- state ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.runtime is not None and self._changes.policy is not None

    @property
    def answering(self) -> bool:
        return self._task is not None

    @property
    def staged(self) -> bool:
        return self._changes.staged

    @property
    def reward(self) -> RewardSource | None:
        """The reward source of the knobs (in force, or staged for the next step)."""
        return self._rewards.get(self.knobs.reward)

    @property
    def live(self) -> Ledger:
        """The cost of the answer being written, so far."""
        return self._answer.live if self._answer is not None else Ledger()

    @property
    def policy(self) -> Policy | None:
        """The policy in force (None until the models are loaded)."""
        return self._changes.policy

    def models(self) -> tuple[StepGenerator | None, StepGenerator | None]:
        """The draft and target loaded so far."""
        engine = self.runtime.engine if self.runtime is not None else None
        return (engine.draft, engine.target) if engine is not None else (None, None)

    def in_force(self) -> InForce:
        return InForce.of(self.knobs, self.reward, self.settings)

    def status(self) -> Status:
        """What the side panel and the header say."""
        return Status.of(self)

    def _emit(self, event: ChatEvent) -> None:
        self.listener(event)

    def notify(self, text: str, severity: Severity = "information", title: str = "") -> None:
        self._emit(Notice(text, severity, title))

    # -- opening and closing ----------------------------------------------------------

    async def open(self) -> None:
        """Load the models (unless given a runtime) and put the knobs in force; never raises."""
        settings = self.settings
        if self.runtime is None:
            self._emit(
                Loading(f"loading models: draft {settings.draft}, target {settings.target}…", "loading")
            )
            self._emit(StateChanged())
            try:
                self.runtime = await open_runtime(settings)
            except Exception as exc:  # any failure is shown; the chat stays open
                self.load_error = str(exc) or type(exc).__name__
                self.notify(self.load_error, "error", "could not load the models")
                self._emit(Loading(f"could not load the models: {self.load_error}", "failed"))
                self._emit(StateChanged())
                return
        runtime = self.runtime
        if runtime.reward is not None:
            self._rewards.setdefault(settings.reward, runtime.reward)
        header = self.transcript.records[0]
        if self._check_models_at_open:
            self._check_models()
        if not header.get("models"):
            described = runtime.describe()
            header["models"] = {k: v for k, v in described.items() if k in ("backend", "draft", "target")}
        pending, self._pending = self._pending, None
        await self._start(pending)
        self._emit(Loading(f"models ready: draft {settings.draft}, target {settings.target}", "ready"))
        self._emit(StateChanged())

    async def _start(self, pending: Knobs | None) -> None:
        """Put the loaded transcript's knobs in force, else the settings'; say why if neither can be."""
        if pending is not None:
            try:
                await self.change(pending, record=False)
                return
            except ConfigError as exc:
                self.notify(f"its settings were not restored: {exc}", "warning", "transcript loaded")
        try:
            await self.change(self.knobs, record=False)
        except ConfigError as exc:
            self.policy_error = str(exc)
            self.notify(f"{exc}; change it to ask (see /help)", "error", "the settings cannot be used")

    async def aclose(self) -> None:
        """Stop the answer in progress and release what the session opened."""
        await self.stop_and_wait()
        runtime_reward = self.runtime.reward if self.runtime is not None else None
        for reward in self._rewards.values():
            if reward is not runtime_reward:
                await reward.aclose()
        self._rewards.clear()
        if self._owns_runtime and self.runtime is not None:
            await self.runtime.aclose()

    # -- changing settings ------------------------------------------------------------

    async def change(self, new: Knobs, *, record: bool = True) -> None:
        """Put `new` in force from the next step; ConfigError (nothing changed) if it cannot be."""
        runtime = self._runtime()
        try:
            await runtime.load_models(new.mode)
        except ConfigError:
            raise
        except Exception as exc:  # a model that cannot be loaded: refused, nothing changes
            raise ConfigError(f"mode {new.mode.value}: the models could not be loaded: {exc}") from None
        reward = await self._reward_for(new)
        policy = new.policy(reward, self.settings)
        runtime.engine.check(policy)
        before = self._in_force_or_none() if self.policy is not None or record else None
        self.knobs, self.policy_error = new, None
        after = self.in_force()
        staged = self._changes.apply(
            self.transcript, new, policy, before, after, answering=self.answering, record=record
        )
        if staged:
            self.notify(f"{staged} — from the next step", title="setting changed")
        self._emit(StateChanged())

    def _runtime(self) -> Runtime:
        """The runtime, or a ConfigError saying why there is none (yet)."""
        if self.load_error:
            raise ConfigError(f"the models could not be loaded: {self.load_error}")
        if self.runtime is None:
            raise ConfigError("the models are still loading; try again in a moment")
        return self.runtime

    def _in_force_or_none(self) -> InForce | None:
        try:
            return self.in_force()
        except ConfigError:  # knobs that never went into force
            return None

    async def _reward_for(self, knobs: Knobs) -> RewardSource | None:
        """The reward source `knobs` names, built once; None if a single-model mode cannot build it."""
        if knobs.reward in self._rewards:
            return self._rewards[knobs.reward]
        assert self.runtime is not None
        try:
            reward = await self.runtime.make_reward(knobs.reward)
        except Exception as exc:  # e.g. a server that does not answer
            if knobs.mode is not Mode.RSD:
                return None  # a single model needs no reward
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"reward {knobs.reward}: {exc or type(exc).__name__}") from None
        self._rewards[knobs.reward] = reward
        return reward

    async def nudge_delta(self, direction: int) -> None:
        """δ one step up (1) or down (-1); ConfigError when there is no δ to move."""
        self._runtime()
        if not self.knobs.uses_delta():
            raise ConfigError(f"the {self.knobs.weighting} weighting has no δ; try /weighting binary")
        await self.change(nudge_delta(self.knobs, self.reward, direction))

    def _source(self, turn: int) -> PolicySource:
        """What the engine asks at the start of each step: staged changes go into force here."""

        def policy_for_step(index: int) -> Policy:
            self._changes.install(self.transcript, turn, index)
            assert self._changes.policy is not None
            return self._changes.policy

        return policy_for_step

    # -- asking -----------------------------------------------------------------------

    def why_not_ask(self) -> str | None:
        """Why a question cannot be asked now (None: it can)."""
        if self.load_error:
            return f"the models could not be loaded: {self.load_error}"
        if self.policy_error and self.policy is None:
            return f"the settings cannot be used: {self.policy_error}; change them first"
        if not self.ready:
            return "the models are still loading; your question is kept"
        if self.answering:
            return "still answering; press Esc to stop it (your question is kept)"
        return None

    async def ask(self, question: str) -> Trace:
        """Answer `question` (the turn's events go to the listener); ConfigError if it cannot start."""
        why_not = self.why_not_ask()
        if why_not:
            raise ConfigError(why_not)
        runtime = self.runtime
        assert runtime is not None
        turn = self.turn = self.transcript.turns + 1
        in_force = self.in_force()
        messages = build_messages(in_force.system, question, self.transcript.history())
        self.transcript.add(user_record(turn, question, in_force.system, in_force.to_dict()))
        self._changes.close()
        answer = self._answer = Answer(turn, question)
        self._emit(TurnStarted(turn, question))
        self._emit(StateChanged())
        solve = runtime.engine.solve(
            messages,
            self._source(turn),
            request_id=str(turn),
            seed=self.settings.seed + turn,
            emit=partial(self._engine_event, answer),
        )
        self._task = asyncio.ensure_future(solve)
        try:
            trace = await self._task
        except asyncio.CancelledError:
            if not self._stopping:  # the caller was cancelled (the app is closing)
                self._task = self._answer = None
                raise
            trace = answer.trace("cancelled")  # stopped before its first step, the solve never ran
        except Exception as exc:  # also in the trace of the Finished event, if that came
            trace = answer.trace("error", str(exc) or type(exc).__name__)
        finally:
            self._stopping = False
        self._task = None
        self._finish(answer, trace)
        return trace

    def stop(self) -> None:
        """Cancel the answer in progress (what was written is kept)."""
        if self._task is not None and not self._task.done():
            self._stopping = True
            self._task.cancel()

    async def stop_and_wait(self) -> None:
        task = self._task
        self.stop()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _engine_event(self, answer: Answer, event: Event) -> None:
        """In the engine's flow: keep the record, then pass the event on with the policy in force."""
        policy = self._changes.policy
        assert policy is not None
        record = answer.follow(event, policy)
        if record is not None and isinstance(event, StepDone):
            self.transcript.add(record)
            self.acceptance += Acceptance.of([event.step])
        self._emit(EngineUpdate(answer.turn, event, policy))
        if record is not None:
            self._emit(StateChanged())

    def _finish(self, answer: Answer, trace: Trace) -> None:
        turn, record = answer.turn, answer.record(trace)
        self.transcript.add(record)
        self.spent.merge(trace.ledger)
        self._answer = None
        self._emit(TurnFinished(turn, record, trace))
        last = self.transcript.records[-2]
        if trace.finish_reason in ("max_steps", "max_tokens") and last["type"] == "change":
            last["from_step"] = None  # installed for a step the budget then did not allow
        self._changes.install(self.transcript, turn, None)
        if trace.finish_reason == "error":
            self.notify(trace.error or "the backend failed", "error", "answer failed")
        elif trace.finish_reason == "cancelled":
            self.notify("stopped; what was written is kept", title="answer stopped")
        self._emit(StateChanged())

    # -- commands ---------------------------------------------------------------------

    async def command(self, line: str) -> None:
        """Run a slash command (settings, /new, /save, /load, /export); ConfigError if it fails."""
        name, rest = parse_command(line)
        if name in SETTINGS_COMMANDS:
            await self.change(change_knobs(name, rest, self.knobs))
        elif name == "new":
            self.new()
        elif name == "save":
            self.save(Path(split_path(rest)) if rest else None)
        elif name == "load":
            if not rest:
                raise ConfigError("usage: /load PATH")
            await self.load(Path(split_path(rest)))
        elif name == "export":
            self.export(Path(split_path(rest)) if rest else None)
        else:
            raise ConfigError(f"/{name} is not a chat command")

    def _idle(self, what: str) -> None:
        if self.answering:
            raise ConfigError(f"stop the answer first (Esc), then {what}")

    def _reset(self) -> None:
        self.turn = 0
        self.spent, self.acceptance = Ledger(), Acceptance()
        self._changes.close()

    def new(self) -> None:
        self._idle("start a new chat")
        models = self.transcript.records[0].get("models", {})
        self.transcript = Transcript.start(self.settings, self.knobs, models)
        self._reset()
        self._emit(Cleared())
        self.notify("new chat")
        self._emit(StateChanged())

    def save(self, path: Path | None = None) -> Path:
        path = path or self.transcript.path or default_path(".jsonl")
        self.transcript.save(path)
        self.notify(f"saved {len(self.transcript.records)} records to {path}", title="transcript saved")
        return path

    def export(self, path: Path | None = None) -> Path:
        saved = self.transcript.path
        path = path or (saved.with_suffix(".md") if saved else default_path(".md"))
        try:
            path.expanduser().write_text(self.transcript.to_markdown(), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.notify(f"exported to {path}", title="Markdown export")
        return path

    async def load(self, path: Path) -> None:
        self._idle("load a transcript")
        await self.show(Transcript.load(path))

    async def show(self, transcript: Transcript) -> None:
        """Continue a loaded transcript: draw it, count its costs, put its settings back in force."""
        self.transcript = transcript
        self._reset()
        self.turn = transcript.turns
        self.spent, self.acceptance = transcript.totals()
        self._emit(Replayed(list(transcript.records)))
        if self.runtime is not None:
            self._check_models()
        self._check_models_at_open = self.runtime is None
        saved = transcript.knobs()
        if saved is not None:
            try:
                knobs = Knobs.from_dict(saved)
                if self.runtime is None:
                    self._pending = knobs
                else:
                    await self.change(knobs, record=False)
            except ConfigError as exc:
                self.notify(f"its settings were not restored: {exc}", "warning", "transcript loaded")
        self.notify(
            f"{transcript.path or 'transcript'}: {transcript.turns} question(s)", title="transcript loaded"
        )
        self._emit(StateChanged())

    def _check_models(self) -> None:
        """Warn when the transcript was written with other models than the ones loaded."""
        self._check_models_at_open = False
        draft, target = self.models()
        loaded = {role: model.info.name for role, model in (("draft", draft), ("target", target)) if model}
        differ = self.transcript.other_models(loaded)
        if differ:
            self.notify("written with " + ", ".join(differ), "warning", "other models")
