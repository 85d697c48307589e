"""Loading a GGUF model with llama.cpp's weight buffers chosen to work on this CPU.

On a CPU with AMX (Intel Sapphire Rapids and later) a llama.cpp built for it repacks the
weights into AMX buffers, and its AMX matrix multiply crashes the process on the Q4_K_M
models rsdchat ships (a segmentation fault in the first decode; ggml-org/llama.cpp#20824).
There, rsdchat loads models without llama.cpp's extra buffer types: the plain CPU kernels
(AVX-512 on such a CPU). Everywhere else the extra buffers (weight repacking) stay on.
`scripts/setup.sh` builds llama.cpp without AMX, so this only applies to other builds; the
repacking it keeps makes the 1.5B generate 1.4x faster on such a CPU than this fallback.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

from rsdchat.plugin_api import PROGRESS
from rsdchat_llamacpp.llamalog import hush

_PATCH_LOCK = threading.Lock()  # the defaults are patched process-wide while one model loads


@functools.cache
def amx_build() -> bool:
    """Whether this llama.cpp build would put weights in AMX buffers on this CPU."""
    hush()
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def extra_buffers() -> bool:
    """Whether models load with llama.cpp's extra buffer types (weight repacking)."""
    if amx_build():
        _say_without_extra_buffers()
        return False
    return True


@functools.cache
def _say_without_extra_buffers() -> None:  # once per process
    PROGRESS.info(
        "llama.cpp: this build has AMX kernels, which crash on Q4_K_M models "
        "(ggml-org/llama.cpp#20824); loading without its extra weight buffers, which is slower. "
        "Rebuild llama-cpp-python without AMX (bash scripts/setup.sh does)"
    )


@contextlib.contextmanager
def model_defaults(**fields: Any) -> Iterator[None]:
    """While loading, `Llama()` starts from defaults with `fields` set.

    `Llama()` has no argument for every model parameter (`use_extra_bufts` among them); it
    copies `llama_model_default_params()`, so this sets the fields on what that returns.
    """
    import llama_cpp.llama_cpp as lib  # the module `Llama()` reads the defaults from

    original = lib.llama_model_default_params

    def defaults() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    with _PATCH_LOCK:
        setattr(lib, "llama_model_default_params", defaults)  # noqa: B010 (a function, patched)
        try:
            yield
        finally:
            setattr(lib, "llama_model_default_params", original)  # noqa: B010
