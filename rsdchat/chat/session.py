"""A chat without any UI: ask, stop, change settings, save, load; it tells a listener what happened.

The session holds the state — the knobs, the policy in force, the transcript, the running
costs — and hands the engine a `PolicySource` for each answer. A change made while an
answer is being written is *staged*; the engine asks the source at the start of every
step, and that is where a staged change goes into force and is noted in the transcript.
So "applies from the next step" holds by construction, for the reward source too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from functools import partial
from pathlib import Path

from rsdchat.chat.answer import Answer
from rsdchat.chat.changes import Changes
from rsdchat.chat.commands import SETTINGS_COMMANDS, InForce, change_knobs, parse_command, split_path
from rsdchat.chat.events import (
    BackendSaid,
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
    TurnKept,
    TurnStarted,
    ignore,
)
from rsdchat.chat.history import Autosave, chats_dir
from rsdchat.chat.knobs import Knobs, Style, nudge_delta
from rsdchat.chat.rewards import Rewards
from rsdchat.chat.status import Status
from rsdchat.chat.transcript import Transcript, default_path, user_record, write_file
from rsdchat.engine import Engine
from rsdchat.errors import ConfigError
from rsdchat.events import Event, StepDone
from rsdchat.files import same_file
from rsdchat.policy import Mode, Policy, PolicySource
from rsdchat.progress import progress_to
from rsdchat.prompts import build_messages
from rsdchat.protocols import RewardSource, StepGenerator
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.trace import Acceptance, Ledger, Trace

ONE_STEP_HINT = 300  # characters: a chat reply this long that was one step gets a word on /steps


async def open_models(settings: Settings) -> Runtime:
    """The models the settings' mode needs, loaded off the event loop (the reward comes later).

    The chat builds its reward sources itself, so a reward that cannot be built (a reward
    server not given yet) leaves the models usable and is fixed with a command.
    """
    runtime = Runtime(settings, Engine(draft=None, target=None))
    try:
        await runtime.load_models(settings.mode)
    except BaseException:
        await runtime.aclose()
        raise
    return runtime


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
        self._rewards = Rewards(settings)  # reward sources built so far
        self.autosave = Autosave(chats_dir(), self._forked)  # where this chat is kept in the history
        self._exported: set[Path] = set()  # the files /export wrote: only those it writes over
        self._pending: Knobs | None = None  # from a transcript loaded before the models were
        self._check_models_at_open = False  # ditto: compare its models once they are loaded
        self._changes = Changes(self._emit)  # the policy in force, and changes staged for the next step
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
    def reward(self) -> RewardSource | None:
        """The reward source of the knobs (in force, or staged for the next step)."""
        return self._rewards.get(self.knobs)

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

    def _forked(self, text: str) -> None:
        self.notify(text, "warning", "saved as a new chat")

    # -- opening and closing ----------------------------------------------------------

    async def open(self) -> None:
        """Load the models (unless given a runtime) and put the knobs in force; never raises."""
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
                self.runtime = await open_models(settings)
            except Exception as exc:  # any failure is shown; the chat stays open
                self.load_error = str(exc) or type(exc).__name__
                self.notify(self.load_error, "error", "could not load the models")
                self._emit(Loading(f"could not load the models: {self.load_error}", "failed"))
                self._emit(StateChanged())
                return
        runtime = self.runtime
        if runtime.reward is not None:
            self._rewards.add(Knobs.from_settings(settings), runtime.reward)
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
        self._hearing.close()
        self._keep_in_history()
        self.autosave.close()
        await self._rewards.aclose(keep=self.runtime.reward if self.runtime is not None else None)
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
        try:
            runtime.engine.check(policy)
        except ConfigError as exc:  # said in the chat's words: δ, not the setting's name
            raise ConfigError(str(exc).replace("setting delta: ", "δ ", 1)) from None
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
        assert self.runtime is not None
        try:
            return await self._rewards.build(knobs, self.runtime)
        except ConfigError:
            if knobs.mode is not Mode.RSD:
                return None  # a single model needs no reward
            raise

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

    async def ask(self, question: str, *, retry_of: int | None = None) -> Trace:
        """Answer `question` (the turn's events go to the listener); ConfigError if it cannot start.

        `retry_of`: the turn this question asks again, which then leaves the models' context.
        """
        why_not = self.why_not_ask()
        if why_not:
            raise ConfigError(why_not)
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
        turn, record = answer.turn, answer.record(trace)
        self.transcript.add(record)
        self.spent.merge(trace.ledger)
        self._answer = None
        self._emit(TurnFinished(turn, record, trace))
        last = self.transcript.records[-2]
        if trace.finish_reason in ("max_steps", "max_tokens") and last["type"] == "change":
            last["from_step"] = None  # installed for a step the budget then did not allow
        self._changes.install(self.transcript, turn, None)
        failed = self.autosave.write(self.transcript)
        if failed:
            self.notify(f"{failed}; /save PATH saves it elsewhere", "error", "the chat is not in the history")
        if trace.finish_reason == "error":
            self.notify(trace.error or "the backend failed", "error", "answer failed")
        elif trace.finish_reason == "cancelled":
            said = "stopped; what was written is kept"
            if trace.text.strip():
                said += ", but left out of the next question's context: /keep keeps it there"
            self.notify(said, title="answer stopped")
        elif self._one_long_step(trace):
            self.notify(
                "the reply had no blank line, so it was one step and got one decision; "
                "/steps sentence (or line) judges it piece by piece",
                title="one step",
            )
        self._emit(StateChanged())

    def _one_long_step(self, trace: Trace) -> bool:
        """A chat reply cut at blank lines that had none: RSD judged all of it at once."""
        steps = trace.answer_steps
        chat = self.knobs.style_of(self.reward) is Style.CHAT and self.knobs.mode is Mode.RSD
        paragraphs = self.knobs.stops(self.settings) == ("\n\n",)
        return chat and paragraphs and len(steps) == 1 and len(steps[0].text) >= ONE_STEP_HINT

    # -- commands ---------------------------------------------------------------------

    async def command(self, line: str) -> None:
        """Run a slash command (settings, /new, /save, /load, /export); ConfigError if it fails."""
        name, rest = parse_command(line)
        if name in SETTINGS_COMMANDS:
            await self.change(change_knobs(name, rest, self.knobs))
        elif name == "retry":
            await self.retry()
        elif name == "keep":
            self.keep()
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

    def retry_turn(self) -> tuple[str, int]:
        """The question /retry asks again and its turn; ConfigError if there is none or it cannot be asked."""
        self._idle("retry")
        last = self.transcript.last("user")
        if last is None:
            raise ConfigError("no question to ask again yet")
        why_not = self.why_not_ask()
        if why_not:
            raise ConfigError(why_not)
        return str(last["content"]), int(last["turn"])

    async def retry(self) -> Trace:
        """Ask the last question again with the settings now in force; its old turn leaves the context."""
        question, turn = self.retry_turn()
        return await self.ask(question, retry_of=turn)

    def keep(self) -> int:
        """Keep the last (stopped) answer in the models' context; the turn it was."""
        self._idle("keep what it wrote")
        last = self.transcript.last("answer")
        if last is None or last.get("finish_reason") != "cancelled":
            raise ConfigError("nothing to keep: only a stopped answer is left out of the context")
        if not str(last.get("content", "")).strip():
            raise ConfigError("nothing to keep: the stopped answer has no finished step")
        if last.get("kept"):
            raise ConfigError(f"turn #{last['turn']} is kept already")
        if last["turn"] in self.transcript.retried():
            raise ConfigError(f"turn #{last['turn']} was asked again: its answer stays out of the context")
        last["kept"] = True
        self.autosave.write(self.transcript)
        self._emit(TurnKept(int(last["turn"])))
        self.notify(f"turn #{last['turn']} is kept: the next question sees what it wrote", title="kept")
        return int(last["turn"])

    def last_answer(self) -> str | None:
        """The text of the last answer that has any (for /copy)."""
        for record in reversed(self.transcript.records):
            if record["type"] == "answer" and str(record.get("content", "")).strip():
                return str(record["content"]).strip()
        return None

    def _keep_in_history(self) -> None:
        """Before another chat is shown: what this one did since its last turn (a ⚙ line) is saved too."""
        if self.autosave.pending(self.transcript):
            self.autosave.write(self.transcript)

    def _reset(self) -> None:
        self.turn = 0
        self.spent, self.acceptance = Ledger(), Acceptance()
        self._changes.close()

    def new(self) -> None:
        self._idle("start a new chat")
        models = self.transcript.records[0].get("models") or {}
        self._keep_in_history()
        self.transcript = Transcript.start(self.settings, self.knobs, models)
        self.autosave.reset(self.transcript)
        self._reset()
        self._emit(Cleared())
        self.notify("new chat")
        self._emit(StateChanged())

    def _own_file(self, path: Path) -> bool:
        """Whether `path` is this chat's own saved file (where it was saved to or loaded from).

        A chat file of the history counts only while this chat writes it (holds its lock).
        """
        own = self.transcript.path
        if own is None or not same_file(path, own):
            return False
        return not self.autosave.inside(own) or self.autosave.holds(own)

    def save(self, path: Path | None = None) -> Path:
        """/save [PATH]: write the transcript; a file already there only if it is this chat's own."""
        path = (path or self.transcript.path or default_path(".jsonl")).expanduser()
        if self.autosave.holds(path):  # the history file this chat writes: written the same way
            self.autosave.write(self.transcript)
            if self.autosave.error:
                raise ConfigError(self.autosave.error)
            assert self.autosave.path is not None
            self.transcript.path, self.transcript.saved = self.autosave.path, len(self.transcript.records)
            path = self.autosave.path
        else:
            if self._own_file(path) and path.is_symlink():  # its own file, reached by a link
                path = Path(os.path.realpath(path))
            path = self.transcript.save(path, replace=self._own_file)
        self.notify(f"saved {len(self.transcript.records)} records to {path}", title="transcript saved")
        return path

    def export(self, path: Path | None = None) -> Path:
        """/export [PATH.md]: the transcript as Markdown; over a file only if this session exported it."""
        saved = self.transcript.path
        if saved is not None and self.autosave.inside(saved):  # not beside the history's files
            saved = None
        path = (path or (saved.with_suffix(".md") if saved else default_path(".md"))).expanduser()
        exported = self._exported

        def ours(there: Path) -> bool:
            return any(same_file(there, before) for before in exported)

        path = write_file(
            path, self.transcript.to_markdown(), replace=ours, what=", and this chat did not export it"
        )
        exported.add(path.absolute())
        self.notify(f"exported to {path}", title="Markdown export")
        return path

    async def load(self, path: Path) -> None:
        self._idle("load a transcript")
        await self.show(Transcript.load(path))

    async def show(self, transcript: Transcript) -> None:
        """Continue a loaded transcript: draw it, count its costs, put its settings back in force."""
        self._keep_in_history()
        self.transcript = transcript
        self.autosave.reset(transcript)
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
        if transcript.cut is not None:
            self.notify(
                f"{transcript.path}:{transcript.cut}: the last line was cut short (a crash?) and is left out",
                "warning",
                "transcript loaded",
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
