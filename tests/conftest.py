"""Fixtures for every test under tests/; the helpers they share are in chat_helpers.py.

(Test modules import helpers from chat_helpers, never from conftest or from one another:
the backends' tests have conftest modules of their own.)
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Saved chats go to a directory of the test's own (never the user's)."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("RSDCHAT_DATA_DIR", str(path))
    return path
