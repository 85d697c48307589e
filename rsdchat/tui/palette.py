"""The chat's entries in Textual's command palette (ctrl+p)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

PaletteEntry = tuple[str, str, Callable[[], object]]  # title, help, what it does


class HasEntries(Protocol):
    """An app that lists its palette entries (the provider never needs to know more of it)."""

    def palette_entries(self) -> Iterable[PaletteEntry]: ...


class ChatCommands(Provider):
    """rsdchat's entries in the command palette."""

    def _entries(self) -> list[PaletteEntry]:
        return list(cast(HasEntries, self.app).palette_entries())

    async def discover(self) -> Hits:
        for title, help_, callback in self._entries():
            yield DiscoveryHit(title, partial(callback), help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(callback), help=help_)
