"""A chat without any UI: ask, stop, change settings, save, load; it tells a listener what happened.

The session holds the state — what the user chose (`Choice`), the policy in force, the transcript, the running
costs — and hands the engine a `PolicySource` for each answer. A change made while an
answer is being written is *staged*; the engine asks the source at the start of every
step, and that is where a staged change goes into force and is noted in the transcript.
So "applies from the next step" holds by construction, for the reward source too.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from pathlib import Path

from rsdchat.chat.answered import Answered
from rsdchat.chat.changes import Changes
from rsdchat.chat.choice import Choice
from rsdchat.chat.commands import COMMANDS, change, parse_command, split_path
from rsdchat.chat.events import (
    BackendSaid,
    ChatEvent,
    EngineUpdate,
    Listener,
    Loading,
    Notice,
    Severity,
    StateChanged,
    TurnStarted,
)
from rsdchat.chat.history import Autosave
from rsdchat.chat.live import Answer
from rsdchat.chat.models import ModelSwitch
from rsdchat.chat.rewards import Rewards
from rsdchat.chat.saving import ChatFiles
from rsdchat.chat.status import Status
from rsdchat.chat.transcript import Transcript, user_record
from rsdchat.chat.transcript_ops import TranscriptOps
from rsdchat.core.errors import ConfigError
from rsdchat.core.events import Event, StepDone, ignore
from rsdchat.core.policy import Mode, Policy, PolicySource
from rsdchat.core.protocols import RewardSource, StepGenerator
from rsdchat.core.trace import Acceptance, Ledger, Trace
from rsdchat.in_force import InForce, nudged_delta, uses_delta
from rsdchat.progress import progress_to
from rsdchat.prompts import build_messages
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.settings import Settings


class ChatSession:
    """One conversation with the models. Use it from one event loop."""

    def __init__(self, settings: Settings, *, runtime: Runtime | None = None, listener: Listener = ignore):
        self.choice = Choice(settings)  # the settings, as changed by commands since, and the chat's extras
        self._opened = settings  # what `/reward default` goes back to
        self.runtime = runtime
        self.listener = listener
        self.transcript = Transcript.start(self.choice, {})
        self.turn = 0  # the question being answered, or the last one
        self.load_error: str | None = None  # why the models could not be loaded
        self.policy_error: str | None = None  # why the choice could not be put in force at open
        self.spent = Ledger()  # finished answers
        self.acceptance = Acceptance()  # over the whole chat
        self._owns_runtime = runtime is None
        self._rewards = Rewards(settings)  # reward sources built so far
        self.files = ChatFiles(self._forked)  # where this chat is kept in the history, saved, exported
        self._changes = Changes(self._emit)  # the policy in force, and changes staged for the next step
        self._models = ModelSwitch(self, self._rewards, self._changes)  # /model
        self._ops = TranscriptOps(self, self._changes)  # /new, /load, /save, /export, /keep, /retry
        self._answered = Answered(self, self._changes)  # the end of each answer
        self._answer: Answer | None = None  # the answer being written
        self._task: asyncio.Future[Trace] | None = None
        self._stopping = False
        self._hearing, self._heard = contextlib.ExitStack(), False

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
    def autosave(self) -> Autosave:
        """Where this chat is kept in the history."""
        return self.files.autosave

    @property
    def settings(self) -> Settings:
        """The settings the chat runs with (changed by /delta, /reward, … since it opened)."""
        return self.choice.settings

    @property
    def reward(self) -> RewardSource | None:
        """The reward source chosen (in force, or staged for the next step)."""
        return self._rewards.get(self.choice)

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
        return self.choice.in_force(self.reward)

    def status(self) -> Status:
        """What the side panel and the header say."""
        return Status.of(self)

    def _emit(self, event: ChatEvent) -> None:
        self.listener(event)

    def notify(self, text: str, severity: Severity = "information", title: str = "") -> None:
        self._emit(Notice(text, severity, title))

    def _forked(self, text: str) -> None:
        self.notify(text, "warning", "saved as a new chat")

    # -- opening and closing ----------------------------------------------------------

    async def open(self) -> None:
        """Load the models (unless given a runtime) and put the choice in force; never raises."""
        settings = self.settings
        if not self._heard:  # what backends say (a server started, restarted) is shown until aclose
            self._hearing.enter_context(progress_to(lambda line: self._emit(BackendSaid(line))))
            self._heard = True
        if self.runtime is None:
            self._emit(
                Loading(f"loading models: draft {settings.draft}, target {settings.target}…", "loading")
            )
            self._emit(StateChanged())
            try:
                self.runtime = await open_runtime(settings, with_reward=False)  # the chat builds its own
            except Exception as exc:  # any failure is shown; the chat stays open
                self.load_error = str(exc) or type(exc).__name__
                self.notify(self.load_error, "error", "could not load the models")
                self._emit(Loading(f"could not load the models: {self.load_error}", "failed"))
                self._emit(StateChanged())
                return
        runtime = self.runtime
        if runtime.reward is not None:
            self._rewards.add(Choice(runtime.settings), runtime.reward)
        await self._ops.opened(runtime)  # its models checked; its settings, else the chat's, in force
        self._emit(Loading(f"models ready: draft {settings.draft}, target {settings.target}", "ready"))
        self._emit(StateChanged())

    async def aclose(self) -> None:
        """Stop the answer in progress and release what the session opened."""
        await self.stop_and_wait()
        self._hearing.close()
        self._ops.keep_in_history()
        self.autosave.close()
        await self._rewards.aclose(keep=self.runtime.reward if self.runtime is not None else None)
        if self._owns_runtime and self.runtime is not None:
            await self.runtime.aclose()

    # -- changing settings ------------------------------------------------------------

    async def change(self, new: Choice, *, record: bool = True) -> None:
        """Put `new` in force from the next step; ConfigError (nothing changed) if it cannot be."""
        runtime = self._runtime()
        try:
            await runtime.load_models(new.settings.mode)
        except ConfigError:
            raise
        except Exception as exc:  # a model that cannot be loaded: refused, nothing changes
            raise ConfigError(
                f"mode {new.settings.mode.value}: the models could not be loaded: {exc}"
            ) from None
        reward = await self._reward_for(new)
        after = new.in_force(reward)
        try:
            runtime.engine.check(after.policy)
        except ConfigError as exc:  # said in the chat's words: δ, not the setting's name
            raise ConfigError(str(exc).replace("setting delta: ", "δ ", 1)) from None
        before = self._in_force_or_none() if self.policy is not None or record else None
        old, self.choice, self.policy_error = self.choice, new, None
        staged = self._changes.apply(
            self.transcript, new, before, after, answering=self.answering, record=record
        )
        if staged:
            self.notify(f"{staged} — from the next step", title="setting changed")
        reset = old.settings.delta is not None and new.settings.delta is None
        if record and reset and reward is not None and old.settings.reward != new.settings.reward:
            self.notify(  # a new source has its own scale: the δ the user set does not carry over
                f"δ is back to {reward.name}'s default, {reward.default_delta:g} (it was "
                f"{old.settings.delta:g}); /delta sets it",
                title="reward changed",
            )
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
        except ConfigError:  # a choice that never went into force
            return None

    async def _reward_for(self, choice: Choice) -> RewardSource | None:
        """The reward source `choice` names, built once; None if a single-model mode cannot build it."""
        assert self.runtime is not None
        try:
            return await self._rewards.build(choice, self.runtime)
        except ConfigError:
            if choice.settings.mode is not Mode.RSD:
                return None  # a single model needs no reward
            raise

    async def nudge_delta(self, direction: int) -> None:
        """δ one step up (1) or down (-1); ConfigError when there is no δ to move."""
        self._runtime()
        settings = self.settings
        if settings.mode is not Mode.RSD:  # no draft step is judged: δ would change nothing
            raise ConfigError(
                f"δ does nothing in {settings.mode.value} mode: /mode rsd to judge drafts again"
            )
        if not uses_delta(settings):
            raise ConfigError(f"the {settings.weighting} weighting has no δ; try /weighting binary")
        await self.change(self.choice.set(delta=nudged_delta(settings, self.reward, direction)))

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
        if self._models.loading:
            return f"{self._models.loading} is loading; your question is kept"
        if not self.ready:
            return "the models are still loading; your question is kept"
        if self.answering:
            return "still answering; press Esc to stop it (your question is kept)"
        return None

    async def ask(self, question: str, *, retry_of: int | None = None) -> Trace:
        """Answer `question` (the turn's events go to the listener); ConfigError if it cannot start.

        `retry_of`: the turn this question asks again, which then leaves the models' context.
        """
        why_not = self.why_not_ask()
        if why_not:
            raise ConfigError(why_not)
        asked = self.choice.with_extras(question=question)
        if asked != self.choice:  # the style follows the question (unless set), and with it reward and δ
            await self.change(asked, record=False)
        runtime = self.runtime
        assert runtime is not None
        turn = self.turn = self.transcript.turns + 1
        in_force = self.in_force()
        self.transcript.add(user_record(turn, question, in_force.system, in_force.to_dict(), retry_of))
        messages = build_messages(in_force.system, question, self.transcript.history())
        self._changes.close()
        answer = self._answer = Answer(turn, question)
        self._emit(TurnStarted(turn, question, retry_of))
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
            if not self._stopping:  # the caller was cancelled (the app is closing): keep the turn
                self._task = None
                self._finish(answer, answer.trace("cancelled"))
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
        self._answer = None  # `live` is nothing from here on
        self._answered.finish(answer, trace)  # its record, its cost, the autosave, and a word

    # -- commands ---------------------------------------------------------------------

    async def command(self, line: str) -> None:
        """Run a slash command: a setting, or `command_<name>` (see COMMANDS); ConfigError if it fails."""
        name, rest = parse_command(line)
        if COMMANDS[name].runner == "setting":
            await self.change(change(name, rest, self.choice, self._opened))
            return
        run = getattr(self, f"command_{name}", None)
        if run is None:
            raise ConfigError(f"/{name} is not a chat command")
        await run(rest)

    async def command_retry(self, rest: str) -> None:
        await self.retry()

    async def command_keep(self, rest: str) -> None:
        self.keep()

    async def command_new(self, rest: str) -> None:
        self.new()

    async def command_save(self, rest: str) -> None:
        self.save(Path(split_path(rest)) if rest else None)

    async def command_load(self, rest: str) -> None:
        if not rest:
            raise ConfigError(f"usage: {COMMANDS['load'].usage}")
        await self.load(Path(split_path(rest)))

    async def command_export(self, rest: str) -> None:
        self.export(Path(split_path(rest)) if rest else None)

    async def command_model(self, rest: str) -> None:
        await self._models.command(rest, self._runtime())

    # -- the transcript (rsdchat.chat.transcript_ops) -----------------------------------

    def retry_turn(self) -> tuple[str, int]:
        """The question /retry asks again and its turn; ConfigError if there is none or it cannot be asked."""
        return self._ops.retry_turn()

    async def retry(self) -> Trace:
        """Ask the last question again with the settings now in force; its old turn leaves the context."""
        question, turn = self.retry_turn()
        return await self.ask(question, retry_of=turn)

    def keep(self) -> int:
        """Keep the last (stopped) answer in the models' context; the turn it was."""
        return self._ops.keep()

    def last_answer(self) -> str | None:
        """The text of the last answer that has any (for /copy)."""
        return self.transcript.last_answer()

    def new(self) -> None:
        self._ops.new()

    def save(self, path: Path | None = None) -> Path:
        """/save [PATH]: write the transcript; a file already there only if it is this chat's own."""
        return self._ops.save(path)

    def export(self, path: Path | None = None) -> Path:
        """/export [PATH.md]: the transcript as Markdown; over a file only if this session exported it."""
        return self._ops.export(path)

    async def load(self, path: Path) -> None:
        await self._ops.load(path)

    async def show(self, transcript: Transcript) -> None:
        """Continue a loaded transcript: draw it, count its costs, put its settings back in force."""
        await self._ops.show(transcript)
