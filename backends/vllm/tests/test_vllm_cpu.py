"""vLLM's CPU build: how the launcher starts it (no GPU shares, a KV-cache size instead), how the
`auto` device is found, and how a launched model is sized for the cost ledger."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from vllm_processes import SMOLLM2

from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.types import Role
from rsdchat_vllm.backend import VllmBackend, client_config, model_params
from rsdchat_vllm.config import API_SERVER, VllmConfig, check_shares
from rsdchat_vllm.launcher import (
    Launcher,
    checkpoint_folder,
    checkpoint_params,
    config_params,
    safetensors_params,
)

# SmolLM2-135M's config.json; its safetensors hold 134,515,008 parameters (counted from the real file)
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
}
SMOLLM2_PARAMS = 134_515_008


# -- the command line and the environment on the CPU ------------------------------------------


def test_on_the_cpu_no_gpu_share_but_bf16_eager_mode_and_a_kv_cache() -> None:
    config = VllmConfig(device="cpu", kv_cache_gib=3, draft_vllm_args="--seed 1")
    assert config.argv(["vllm"], Role.DRAFT, "m", 8001) == [
        "vllm", "serve", "m", "--host", "127.0.0.1", "--port", "8001", "--served-model-name", "m",
        "--max-model-len", "4096", "--dtype", "bfloat16", "--enforce-eager", "--seed", "1",
    ]  # fmt: skip
    assert config.env(Role.DRAFT, {"PATH": "/bin"})["VLLM_CPU_KVCACHE_SPACE"] == "3"
    reward = config.argv(["vllm"], Role.REWARD, "prm", 1)
    assert reward[reward.index("--runner") :] == [
        "--runner",
        "pooling",
        "--dtype",
        "bfloat16",
        "--enforce-eager",
    ]


def test_the_users_arguments_override_the_cpu_defaults() -> None:
    config = VllmConfig(device="cpu", vllm_args="--dtype=float32", target_vllm_args="--no-enforce-eager")
    argv = config.argv(["vllm"], Role.TARGET, "m", 1)
    assert "bfloat16" not in argv and "--enforce-eager" not in argv
    assert argv[-2:] == ["--dtype=float32", "--no-enforce-eager"]
    argv = VllmConfig(device="cpu", vllm_args="--dtype float16 --enforce-eager").argv(
        ["vllm"], Role.DRAFT, "m", 1
    )
    assert argv.count("--dtype") == 1 and argv.count("--enforce-eager") == 1


def test_the_kv_cache_size_comes_from_the_setting_the_environment_or_one_gib() -> None:
    cpu = VllmConfig(device="cpu")
    assert cpu.env(Role.TARGET, {})["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert cpu.env(Role.TARGET, {"VLLM_CPU_KVCACHE_SPACE": "6"})["VLLM_CPU_KVCACHE_SPACE"] == "6"
    assert (
        VllmConfig(device="cpu", kv_cache_gib=2).env(Role.TARGET, {"VLLM_CPU_KVCACHE_SPACE": "6"})[
            "VLLM_CPU_KVCACHE_SPACE"
        ]
        == "2"
    )
    assert "VLLM_CPU_KVCACHE_SPACE" not in VllmConfig(device="gpu").env(Role.TARGET, {})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        VllmConfig(kv_cache_gib=0)


def test_gpu_shares_are_not_checked_on_the_cpu() -> None:
    config = VllmConfig(draft_gpu_share=0.6, target_gpu_share=0.6)
    check_shares(config, [Role.DRAFT], Role.TARGET, device="cpu")
    with pytest.raises(ConfigError, match="must add up to less than 1"):
        check_shares(config, [Role.DRAFT], Role.TARGET, device="gpu")


def test_vllms_api_server_module_is_given_the_model_as_an_option() -> None:
    command = ["/venv/bin/python", "-m", API_SERVER]
    argv = VllmConfig(device="cpu").argv(command, Role.DRAFT, "/ckpt/smollm2", 5)
    assert argv[:6] == [*command, "--model", "/ckpt/smollm2", "--host"]


# -- which device `auto` means -------------------------------------------------------------------


def test_auto_is_the_gpu_where_a_gpu_device_is_visible(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").touch()  # the driver's control file alone is no GPU
    auto = VllmConfig()
    assert auto.device == "auto" and auto.resolved_device({}, dev) == "cpu"
    (dev / "nvidia0").touch()
    assert auto.resolved_device({}, dev) == "gpu"
    assert auto.resolved_device({"CUDA_VISIBLE_DEVICES": "1"}, dev) == "gpu"
    assert auto.resolved_device({"CUDA_VISIBLE_DEVICES": ""}, dev) == "cpu"  # hidden
    assert auto.resolved_device({"CUDA_VISIBLE_DEVICES": "-1"}, dev) == "cpu"
    (dev / "nvidia0").unlink()
    (dev / "kfd").touch()  # an AMD GPU (ROCm)
    assert auto.resolved_device({}, dev) == "gpu"
    assert VllmConfig(device="cpu").resolved_device({}, dev) == "cpu"  # the setting wins
    assert VllmConfig(device=" GPU ").resolved_device({}, tmp_path) == "gpu"
    with pytest.raises(ValueError, match="give auto, gpu or cpu"):
        VllmConfig(device="tpu")


def test_the_install_hint_tells_of_the_cpu_build(state: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Launcher(VllmConfig(vllm_command="/nonexistent/bin/vllm"))
    message = str(caught.value)
    assert "it needs a GPU" not in message and "\n" not in message
    assert "with a GPU: pip install vllm; on a CPU: its CPU build, see docs/backends.md" in message
    docs = (Path(__file__).resolve().parents[3] / "docs" / "backends.md").read_text()
    assert "### vLLM on the CPU" in docs


def test_the_cpu_wheels_own_vllm_command_fails_with_a_hint(tmp_path: Path, state: Path) -> None:
    fake = tmp_path / "vllm"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'importlib.metadata.PackageNotFoundError: No package metadata was found for vllm' >&2\n"
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    fleet = Launcher(VllmConfig(vllm_command=str(fake), device="cpu"), say=[].append)
    with pytest.raises(BackendError) as caught:
        fleet.start(Role.DRAFT, "m")
    message = str(caught.value)
    assert message.startswith("the draft vLLM server did not start") and "\n" not in message
    assert "cannot start without a distribution named vllm" in message and " — log: " in message


def test_servers_on_the_cpu_start_with_the_kv_cache_and_a_size_from_the_checkpoint(
    standin: str, state: Path, reaper: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _hub_snapshot(tmp_path / "hub", SMOLLM2)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    checkpoint_params.cache_clear()
    _safetensors(
        snapshot / "model.safetensors", {"embed": ("BF16", [1000, 64]), "lm_head": ("BF16", [1000, 64])}
    )
    config = VllmConfig(
        vllm_command=standin,
        device="cpu",
        kv_cache_gib=2,
        draft_gpu_share=0.6,  # 1.2 together: not checked on the CPU
        target_gpu_share=0.6,
        target_params="2.5B",
    )
    backend = VllmBackend(config, say=[].append)
    try:
        draft = backend.generator(Role.DRAFT, SMOLLM2)
        reaper.append(draft.server.pid)
        target = backend.generator(Role.TARGET, SMOLLM2)
        reaper.append(target.server.pid)
        for server in (draft.server, target.server):
            command = server.log_path.read_text().splitlines()[0]
            assert "--gpu-memory-utilization" not in command
            assert command.endswith("--max-model-len 4096 --dtype bfloat16 --enforce-eager")
            environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
            assert b"VLLM_CPU_KVCACHE_SPACE=2" in environ
        assert draft.info.n_params == 128_000  # counted from the snapshot's safetensors header
        assert target.info.n_params == 2_500_000_000  # the setting wins
        reward = client_config(config, Role.REWARD, draft.server)
        assert reward.params(Role.REWARD) == 128_000  # what a vllm-* reward on that server is charged
        assert any(
            note.startswith("servers on the CPU (device setting; KV cache 2 GiB") for note in backend.facts()
        )
    finally:
        backend.launcher.close()
        checkpoint_params.cache_clear()


# -- the size of a launched model ------------------------------------------------------------------


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A safetensors file's header (the data is never read for counting)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    header |= {
        name: {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}
        for name, (dtype, shape) in tensors.items()
    }
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)


def _hub_snapshot(hub: Path, name: str, revision: str = "0123abc") -> Path:
    repo = hub / ("models--" + name.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    return snapshot


def test_a_checkpoint_is_counted_from_its_safetensors_headers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    _safetensors(tmp_path / "model.safetensors", {"a": ("BF16", [576, 49152]), "b": ("F32", [576])})
    assert safetensors_params(tmp_path) == 576 * 49152 + 576
    checkpoint_params.cache_clear()
    assert checkpoint_params(str(tmp_path)) == 576 * 49152 + 576  # exact: not the config's estimate


def test_a_sharded_checkpoint_counts_the_files_of_its_index(tmp_path: Path) -> None:
    _safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a": ("BF16", [10, 10])})
    _safetensors(tmp_path / "model-00002-of-00002.safetensors", {"b": ("BF16", [5, 4]), "c": ("BF16", [7])})
    _safetensors(tmp_path / "consolidated.safetensors", {"all": ("BF16", [127])})  # another copy: not counted
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    weight_map["c"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert safetensors_params(tmp_path) == 100 + 20 + 7


def test_packed_quantized_weights_count_what_they_pack(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4}})
    )
    tensors = {"l.qweight": ("I32", [64, 128]), "l.scales": ("F16", [1, 128]), "norm": ("F16", [128])}
    _safetensors(tmp_path / "model.safetensors", tensors)
    assert safetensors_params(tmp_path) == 64 * 128 * 8 + 128 + 128


def test_without_safetensors_the_size_is_estimated_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 16)
    assert safetensors_params(tmp_path) == 0
    assert config_params(tmp_path) == SMOLLM2_PARAMS  # the estimate is exact for a Llama
    _safetensors(tmp_path / "model.safetensors", {})
    (tmp_path / "model.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")  # a broken header
    checkpoint_params.cache_clear()
    assert checkpoint_params(str(tmp_path)) == SMOLLM2_PARAMS
    assert config_params(tmp_path / "nowhere") == 0


def test_a_hub_model_is_found_in_the_hugging_face_cache(tmp_path: Path) -> None:
    snapshot = _hub_snapshot(tmp_path / "hub", "Qwen/Qwen2.5-Math-PRM-7B")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    assert checkpoint_folder("Qwen/Qwen2.5-Math-PRM-7B", env) == snapshot
    assert checkpoint_folder("Qwen/Qwen2.5-Math-PRM-7B", {"HF_HOME": str(tmp_path)}) == snapshot
    assert checkpoint_folder("Qwen/not-downloaded", env) is None
    assert checkpoint_folder("gpt-4o", env) is None


def test_a_role_setting_wins_over_the_checkpoint_and_nothing_found_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    checkpoint_params.cache_clear()
    assert model_params(VllmConfig(), Role.DRAFT, str(tmp_path)) == SMOLLM2_PARAMS
    assert model_params(VllmConfig(draft_params="1.5B"), Role.DRAFT, str(tmp_path)) == 1_500_000_000
    assert model_params(VllmConfig(), Role.TARGET, str(tmp_path / "missing")) == 0  # unknown
