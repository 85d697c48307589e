"""Model loading: llama.cpp's defaults are set for one load and put back."""

from __future__ import annotations

import logging
import threading

import llama_cpp.llama_cpp as lib
import pytest

from rsdchat.progress import PROGRESS
from rsdchat_llamacpp import loading
from rsdchat_llamacpp.loading import model_defaults


def test_model_defaults_apply_inside_and_are_restored_after() -> None:
    assert lib.llama_model_default_params().use_extra_bufts is True  # llama.cpp's own default
    with model_defaults(use_extra_bufts=False):
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params().use_extra_bufts is True


def test_model_defaults_are_restored_when_the_load_fails() -> None:
    original = lib.llama_model_default_params
    try:
        with model_defaults(use_extra_bufts=False):
            raise ValueError("load failed")
    except ValueError:
        pass
    assert lib.llama_model_default_params is original


def test_loads_are_serialised_while_the_defaults_are_patched() -> None:
    seen: list[bool] = []

    def other_load() -> None:
        with model_defaults(use_extra_bufts=True):
            seen.append(lib.llama_model_default_params().use_extra_bufts)

    with model_defaults(use_extra_bufts=False):
        thread = threading.Thread(target=other_load)
        thread.start()
        thread.join(0.2)
        assert thread.is_alive()  # waits for this load to finish
        assert lib.llama_model_default_params().use_extra_bufts is False
    thread.join()
    assert seen == [True]


def test_an_amx_build_loads_without_extra_buffers_and_says_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "amx_build", lambda: True)
    loading._say_without_extra_buffers.cache_clear()
    lines: list[str] = []
    heard = logging.Handler()
    heard.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    PROGRESS.addHandler(heard)
    try:
        assert loading.extra_buffers() is False
        assert loading.extra_buffers() is False
    finally:
        PROGRESS.removeHandler(heard)
        loading._say_without_extra_buffers.cache_clear()
    assert len(lines) == 1 and "AMX" in lines[0] and "scripts/setup.sh" in lines[0]


def test_a_build_without_amx_keeps_extra_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "amx_build", lambda: False)
    assert loading.extra_buffers() is True
