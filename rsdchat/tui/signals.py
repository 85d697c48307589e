"""SIGTERM and SIGHUP end the chat app the way quitting does.

The answer being written is stopped and saved (as Esc does), the chat is kept in the history,
the terminal is given back, and the app exits with status 128 + the signal's number. The
handlers are taken away as the first signal comes, so a second one of the kind ends the
process at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from textual.app import App

from rsdchat.chat.session import ChatSession

ENDING = (signal.SIGTERM, signal.SIGHUP)  # a kill, the terminal closed: the app ends as if quit


class SignalEnd:
    """The app's handlers for the signals that end it, while it runs."""

    def __init__(self, app: App[None], session: ChatSession) -> None:
        self.app = app
        self.session = session
        self.ending = False  # a signal came: what the session says now is not drawn any more
        self._caught: list[signal.Signals] = []  # handled while the app runs

    def catch(self) -> None:
        """Handle SIGTERM and SIGHUP (where the loop can: not outside the main thread)."""
        loop = asyncio.get_running_loop()
        for number in ENDING:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(number, self.end_on_signal, number)
                self._caught.append(number)

    def release(self) -> None:
        loop = asyncio.get_running_loop()
        for number in self._caught:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(number)
        self._caught = []

    def end_on_signal(self, number: int) -> None:
        """A signal came: stop and save the answer, then exit with status 128 + its number.

        A second signal of the kind ends the process at once (the handlers are gone).
        """
        self.release()
        self.app.run_worker(self._end(number), group="signal", exit_on_error=False)

    async def _end(self, number: int) -> None:
        session = self.session
        await session.stop_and_wait()
        deadline = time.monotonic() + 5
        while session.answering and time.monotonic() < deadline:  # the stopped turn being saved
            await asyncio.sleep(0.01)
        self.ending = True
        if number == signal.SIGHUP:
            # The terminal is gone: there is nothing to give back, and Textual, which restarts its
            # output on the SIGCONT that comes with the hangup, would wait on it forever.
            try:
                await session.aclose()  # the chat saved, the models and servers closed
            finally:
                os._exit(128 + number)
        self.app.exit(return_code=128 + number)
