"""What the slash commands and the command palette entries do in the running app."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual.widgets import Input

from rsdchat.engine import Mode
from rsdchat.errors import ConfigError
from rsdchat.rewards import REWARDS
from rsdchat.tui.commands import (
    SETTINGS_COMMANDS,
    PaletteEntry,
    change_knobs,
    help_text,
    parse_command,
    split_path,
)
from rsdchat.tui.session import WEIGHTING_PARAMS, CostMeter, Knobs, Style
from rsdchat.tui.transcript import Transcript

if TYPE_CHECKING:
    from rsdchat.tui.app import RsdChatApp


def default_path(suffix: str) -> Path:
    return Path(f"rsdchat-{datetime.now():%Y%m%d-%H%M%S}{suffix}")


class SlashHandler:
    """Runs `/commands` typed in the input; every failure is a notification, never a crash."""

    def __init__(self, app: RsdChatApp) -> None:
        self.app = app

    async def run(self, line: str) -> bool:
        """Run one command line; True if it worked (the input is then cleared)."""
        app = self.app
        try:
            name, rest = parse_command(line)
            if name in SETTINGS_COMMANDS:
                await app.change(change_knobs(name, rest, app.knobs))
            else:
                await getattr(self, f"cmd_{name}")(rest)
        except ConfigError as exc:
            app.notify(str(exc), title=line.split()[0], severity="error", timeout=8)
            return False
        return True

    def _idle(self, what: str) -> None:
        if self.app.generating:
            raise ConfigError(f"stop the answer first (Esc), then {what}")

    async def cmd_new(self, rest: str) -> None:
        self._idle("start a new chat")
        app = self.app
        models = app.transcript.records[0].get("models", {})
        app.transcript = Transcript.start(app.settings, app.knobs, models)
        await self._reset_view()
        await app.view.show_message("new chat")
        app.notify("new chat")

    async def _reset_view(self) -> None:
        app = self.app
        app.turn = 0
        app.done_cost, app.live_cost = CostMeter(), CostMeter()
        app.drafts_scored = app.drafts_accepted = 0
        app.controls.open_note = None
        await app.view.clear()
        app.refresh_status()

    async def cmd_save(self, rest: str) -> None:
        app = self.app
        path = Path(split_path(rest)) if rest else app.transcript.path or default_path(".jsonl")
        app.transcript.save(path)
        app.notify(f"saved {len(app.transcript.records)} records to {path}", title="transcript saved")

    async def cmd_load(self, rest: str) -> None:
        self._idle("load a transcript")
        if not rest:
            raise ConfigError("usage: /load PATH")
        await self.show(Transcript.load(Path(split_path(rest))))

    async def cmd_export(self, rest: str) -> None:
        app = self.app
        saved = app.transcript.path
        path = Path(split_path(rest)) if rest else saved.with_suffix(".md") if saved else default_path(".md")
        try:
            path.expanduser().write_text(app.transcript.to_markdown(), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        app.notify(f"exported to {path}", title="Markdown export")

    async def cmd_help(self, rest: str) -> None:
        await self.app.view.show_help(help_text())

    async def cmd_quit(self, rest: str) -> None:
        self.app.exit()

    # -- loading ----------------------------------------------------------------------

    async def show(self, transcript: Transcript) -> None:
        """Show a loaded transcript, continue it, and put its settings back in force."""
        app = self.app
        app.transcript = transcript
        await self._reset_view()
        await app.view.replay(transcript.records)
        app.turn = transcript.turns
        for record in transcript.records:
            if record["type"] == "answer" and isinstance(record.get("cost"), dict):
                app.done_cost.add_saved(record["cost"])
            if record["type"] == "step" and record["author"] == "draft" and record.get("reward") is not None:
                app.drafts_scored += 1
                app.drafts_accepted += bool(record.get("accepted", True))
        self._check_models(transcript)
        saved = transcript.knobs()
        if saved is not None:
            try:
                knobs = Knobs.from_dict(saved)
                if app.engine is None:
                    app.controls.pending = knobs
                else:
                    await app.change(knobs, record=False)
            except ConfigError as exc:
                app.notify(f"its settings were not restored: {exc}", severity="warning")
        app.refresh_status()
        where = transcript.path or "transcript"
        app.notify(f"{where}: {transcript.turns} question(s)", title="transcript loaded")

    def _check_models(self, transcript: Transcript) -> None:
        models = transcript.records[0].get("models") or {}
        settings = self.app.settings
        differ = [
            f"{role} {models[role]} (now {now})"
            for role, now in (("draft", settings.draft), ("target", settings.target))
            if models.get(role) and models[role] != now
        ]
        if differ:
            self.app.notify("written with " + ", ".join(differ), title="other models", severity="warning")

    # -- the command palette ----------------------------------------------------------

    def prefill(self, text: str) -> None:
        prompt = self.app.query_one(Input)
        prompt.value = text
        prompt.cursor_position = len(text)
        prompt.focus()

    def palette_entries(self) -> Iterable[PaletteEntry]:
        app = self.app
        run = self.run

        def knob(knobs: Knobs) -> None:
            app.run_worker(app.try_change(knobs), group="palette")

        yield ("Raise δ", "raise the threshold δ one step", partial(app.run_action, "delta(1)"))
        yield ("Lower δ", "lower the threshold δ one step", partial(app.run_action, "delta(-1)"))
        yield ("Set δ…", "type a value for δ", partial(self.prefill, "/delta "))
        yield ("Stop the answer", "cancel the generation in progress (Esc)", app.action_stop)
        for name, params in WEIGHTING_PARAMS.items():
            shown = " ".join(params) or "no parameters"
            yield (
                f"Weighting: {name}",
                f"ω = {name} ({shown})",
                partial(knob, replace(app.knobs, weighting=name)),
            )
        for name, about in REWARDS.items():
            yield (f"Reward: {name}", about, partial(run, f"/reward {name}"))
        for mode in Mode:
            yield (f"Mode: {mode.value}", "who writes the steps", partial(run, f"/mode {mode.value}"))
        for style in Style:
            yield (f"Style: {style.value}", "conversation style", partial(run, f"/mode {style.value}"))
        yield (
            "Style: follow the reward source",
            "math for process rewards, chat for outcome",
            partial(run, "/mode auto"),
        )
        yield ("System prompt…", "type a new system prompt", partial(self.prefill, "/system "))
        yield ("New chat", "start over (the settings stay)", partial(run, "/new"))
        yield ("Save transcript", "save as JSONL", partial(run, "/save"))
        yield ("Load transcript…", "type the path of a saved transcript", partial(self.prefill, "/load "))
        yield ("Export Markdown", "write the transcript as Markdown", partial(run, "/export"))
        yield ("Side panel", "show or hide the status panel (F4)", app.action_toggle_panel)
        yield ("Help", "slash commands and keys", partial(run, "/help"))
