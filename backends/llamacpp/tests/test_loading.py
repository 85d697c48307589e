"""Model loading: llama.cpp's defaults are set for one load and put back."""

from __future__ import annotations

import threading

import llama_cpp.llama_cpp as lib

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
