"""The scrolling transcript: questions, live steps, rejected drafts, notes and answers.

`TranscriptView` draws both a live answer (fed by the engine's events) and a saved
transcript (`replay`), with the same widgets, so a reloaded chat looks as it did.
"""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from rsdchat.chat.transcript import decision_of, retried_turns
from rsdchat.core.decision import Decision
from rsdchat.files import Record
from rsdchat.tui.widgets.steps import (
    AnswerBox,
    Bounds,
    NoteLine,
    RejectedDraft,
    StepView,
    TurnView,
    UserView,
    finish_line,
    rejected_view,
)
from rsdchat.tui.widgets.welcome import Welcome

ASKED_AGAIN, KEPT = "asked again: out of the context", "kept in the context"


def context_note(record: Record, retried: set[int]) -> str:
    """What the finish line says about the models' context ('' when the answer is in it, as usual)."""
    if record.get("turn") in retried:
        return ASKED_AGAIN
    if record.get("finish_reason") == "cancelled" and str(record.get("content", "")).strip():
        return KEPT if record.get("kept") else "out of the context (/keep)"
    return ""


def bounds_of(record: Record) -> Bounds:
    saved = record.get("reward_bounds")
    return (float(saved[0]), float(saved[1])) if isinstance(saved, list) and len(saved) == 2 else None


class TranscriptView(VerticalScroll):
    """Everything said in this chat, newest at the bottom (kept scrolled there while reading)."""

    def __init__(self) -> None:
        super().__init__(id="transcript")
        self.turn_view: TurnView | None = None  # the answer being written or replayed

    @property
    def current(self) -> StepView | None:
        return self.turn_view.current if self.turn_view is not None else None

    def follow(self) -> None:
        """Keep the newest text in view once the chat is taller than the screen.

        (Textual's anchor bottom-aligns short content, so it is only set once needed; it
        lets go while the user scrolls up, and holds again at the bottom.)
        """
        if not self.is_anchored:
            self.call_after_refresh(self._anchor_if_full)

    def _anchor_if_full(self) -> None:
        if not self.is_anchored and self.virtual_size.height > self.scrollable_content_region.height:
            self.anchor()

    async def welcome(self) -> None:
        """The guidance an empty chat starts with (gone once a question is asked)."""
        await self.mount(Welcome())

    async def _unwelcome(self) -> None:
        for welcome in self.query(Welcome).results():
            await welcome.remove()

    async def clear(self) -> None:
        self.turn_view = None
        self.anchor(False)
        await self.remove_children()

    async def add_question(self, question: str, turn: int, retry_of: int | None = None) -> None:
        await self._unwelcome()
        self.turn_view = TurnView(turn)
        await self.mount_all([UserView(question, turn, retry_of), self.turn_view])
        if retry_of is not None:
            self.mark(retry_of, ASKED_AGAIN)
        self.follow()

    def mark(self, turn: int, context: str) -> None:
        """Say on turn `turn`'s finish line whether the models still see its answer."""
        for view in self.query(TurnView).results():
            if view.turn == turn and view.record is not None:
                for line in view.query(".finish").results(Static):
                    line.update(self._finish_line(view.record, context))

    def toggle_rejected(self) -> bool:
        """Open every rejected draft, or close them all if all are open; whether they are open now."""
        drafts = list(self.query(RejectedDraft).results())
        opened = any(draft.collapsed for draft in drafts)
        for draft in drafts:
            draft.collapsed = not opened
        return opened

    async def start_step(self, index: int, author: str) -> None:
        if self.turn_view is None:
            return
        view = StepView(index, author)
        self.turn_view.current = view
        await self.turn_view.mount(view)
        self.follow()

    def add_text(self, index: int, author: str, text: str) -> None:
        view = self.current
        if view is not None and (view.index, view.author) == (index, author):
            view.append(text)
            self.follow()

    def show_decision(self, decision: Decision, bounds: Bounds, detail: str = "") -> None:
        if self.current is not None:
            self.current.show_decision(decision, bounds, detail)

    async def step_done(
        self, index: int, author: str, text: str, tokens: int, accepted: bool, score: float | None = None
    ) -> None:
        view = self.current
        if self.turn_view is None or view is None or (view.index, view.author) != (index, author):
            return
        self.turn_view.current = None
        if accepted:
            view.finish(text, tokens, accepted=True, score=score)
        else:
            await self.turn_view.mount(
                rejected_view(index, text, view.decision, view.bounds, view.detail), before=view
            )
            await view.remove()

    async def show_note(self, note: int, text: str, in_turn: bool) -> None:
        """Add note `note`, or give it new text."""
        for line in self.query(NoteLine).results():
            if line.note == note:
                line.retext(text)
                return
        await (self.turn_view if in_turn and self.turn_view is not None else self).mount(NoteLine(text, note))
        self.follow()

    async def remove_note(self, note: int) -> None:
        for line in self.query(NoteLine).results():
            if line.note == note:
                await line.remove()

    async def finish_turn(self, line: Record) -> None:
        """Close the answer: keep a stopped step's text, highlight the final answer, sum up."""
        turn_view = self.turn_view
        if turn_view is None:
            return
        current = turn_view.current
        if current is not None:
            current.stop()
        turn_view.record = line
        await turn_view.mount_all(self._ending(line, context_note(line, set())))
        turn_view.add_class("-done")
        turn_view.current = None
        self.turn_view = None
        self.follow()

    @classmethod
    def _ending(cls, record: Record, context: str) -> list[Widget]:
        widgets: list[Widget] = []
        if record.get("final_answer"):
            widgets.append(AnswerBox(str(record["final_answer"])))
        widgets.append(Static(cls._finish_line(record, context), classes="finish"))
        return widgets

    @staticmethod
    def _finish_line(record: Record, context: str) -> Text:
        return finish_line(
            str(record.get("finish_reason")),
            record.get("error"),
            int(record.get("steps", 0)),
            int(record.get("drafts") or 0),
            int(record.get("accepted_drafts") or 0),
            float(record.get("seconds") or 0.0),
            context,
        )

    def loaded(self, text: str, *, failed: bool = False) -> None:
        """Replace the "loading models…" line."""
        for line in self.query(".loading").results(Static):
            line.update(text)
            line.remove_class("loading")
            line.set_class(failed, "failure")

    async def show_message(self, text: str, classes: str = "info") -> None:
        await self.mount(Static(text, classes=classes, markup=False))
        self.follow()

    async def replay(self, records: list[Record]) -> None:
        """Draw a saved transcript (replacing what is shown)."""
        await self.clear()
        top: list[Widget] = []
        open_turn: Record | None = None  # the question whose answer is being read
        children: list[Widget] = []
        retried = retried_turns(records)
        answer: Record | None = None

        def close_turn() -> None:
            if open_turn is not None:
                number, again = int(open_turn["turn"]), open_turn.get("retry_of")
                view = TurnView(number, *children, classes="-done")
                view.record = answer
                top.extend([UserView(str(open_turn["content"]), number, again), view])

        for record in records:
            kind = record["type"]
            if kind == "user":
                close_turn()
                open_turn, children, answer = record, [], None
            elif kind == "change":
                (children if open_turn is not None else top).append(NoteLine(record["text"]))
            elif kind == "step" and open_turn is not None:
                children.append(self._saved_step(record))
            elif kind == "answer" and open_turn is not None:
                if record.get("partial"):
                    index, author = int(record.get("partial_index") or 0), str(record.get("partial_author"))
                    stopped = StepView(index, author)
                    stopped.append(str(record["partial"]))
                    stopped.stop()
                    children.append(stopped)
                children += self._ending(record, context_note(record, retried))
                answer = record
                close_turn()
                open_turn, children = None, []
        close_turn()
        await self.mount_all(top)
        self.follow()

    @staticmethod
    def _saved_step(record: Record) -> Widget:
        decision = decision_of(record)
        bounds = bounds_of(record)
        index, author, text = int(record["index"]), str(record["author"]), str(record["text"])
        saved = record.get("detail")
        detail = saved if isinstance(saved, str) else ""  # why a draft was rejected
        if not record.get("accepted", True):
            return rejected_view(index, text, decision, bounds, detail)
        view = StepView(index, author)
        if decision is not None:
            view.show_decision(decision, bounds, detail)
        score = record.get("score")
        view.finish(text, int(record.get("tokens") or 0), True, float(score) if score is not None else None)
        return view
