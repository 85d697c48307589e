"""The vllm backend's settings (`VllmConfig`) and the `vllm serve` command line of each role.

`VllmConfig` is the one declaration of this plugin's settings: rsdchat turns it into the
`[backends.vllm]` TOML table, the `RSDCHAT_<FIELD>` environment variables and the
`--<field>` flags. Per-role settings are spelled `<role>_<what>` (`target_gpu_share`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, field_validator

from rsdchat.plugin_api import RUNTIME_ONLY, ConfigError, Role
from rsdchat_openai.config import ClientConfig

HOST = "127.0.0.1"  # every server listens on loopback only
RESERVED = ("--host", "--port", "--served-model-name")  # set by rsdchat; a role's port setting is the way
INSTALL = (
    "install vLLM (with a GPU: pip install vllm; on a CPU: its CPU build, see docs/backends.md "
    "'vLLM on the CPU'), or set vllm_command to it"
)
# On the CPU, unless the arguments say otherwise: bf16 weights, no graph capture (slow to start on a CPU)
CPU_DEFAULTS = (("--dtype", "bfloat16"), ("--enforce-eager",))
DEVICES = ("auto", "gpu", "cpu")
Device = Literal["gpu", "cpu"]
GPU_FILES = ("nvidia[0-9]*", "kfd", "dxg")  # NVIDIA, AMD (ROCm) and WSL GPU devices under /dev
API_SERVER = "vllm.entrypoints.openai.api_server"  # `python -m` it: takes --model MODEL, not `serve MODEL`


def _role_share(role: str, default: float) -> Any:
    return Field(
        default,
        gt=0,
        lt=1,
        description=f"share of the GPU's memory the {role} server may take (--gpu-memory-utilization); "
        "servers on one GPU must add up to less than 1 (not used on the CPU: see kv_cache_gib)",
        json_schema_extra=RUNTIME_ONLY,
    )


def _role_gpus(role: str) -> Any:
    return Field(
        None,
        description=f"GPUs of the {role} server, as CUDA_VISIBLE_DEVICES (e.g. '1' or '0,1'; default: "
        "every GPU this process sees)",
        json_schema_extra=RUNTIME_ONLY,
    )


def _role_tp(role: str) -> Any:
    return Field(
        1,
        ge=1,
        description=f"GPUs the {role} server splits its model across (--tensor-parallel-size)",
        json_schema_extra=RUNTIME_ONLY,
    )


def _role_port(role: str) -> Any:
    return Field(
        0,
        ge=0,
        le=65535,
        description=f"port of the {role} server (0: a free one)",
        json_schema_extra=RUNTIME_ONLY,
    )


def _role_args(role: str) -> Any:
    return Field("", description=f"more `vllm serve` arguments for the {role} server only (shell-quoted)")


class VllmConfig(ClientConfig):
    """vLLM servers rsdchat starts on this machine: `[backends.vllm]`, `RSDCHAT_<FIELD>`, `--<field>`.

    The client's settings (`ClientConfig`: read timeout, draft log-probabilities) are the openai
    backend's, declared once; one flag sets both.
    """

    vllm_command: str = Field(
        "vllm",
        description="the vLLM command: 'vllm' from PATH, a path, or a command line (e.g. 'uv run vllm')",
        json_schema_extra=RUNTIME_ONLY,
    )
    device: str = Field(
        "auto",
        description="where the servers run: 'gpu', 'cpu' (vLLM's CPU build), or 'auto': the GPU where this "
        "machine has one (/dev/nvidia*, /dev/kfd, /dev/dxg) not hidden by CUDA_VISIBLE_DEVICES, else the CPU",
        json_schema_extra=RUNTIME_ONLY,
    )
    kv_cache_gib: int | None = Field(
        None,
        ge=1,
        description="on the CPU: KV-cache memory of each server in GiB (VLLM_CPU_KVCACHE_SPACE; "
        "default: $VLLM_CPU_KVCACHE_SPACE, else 1)",
        json_schema_extra=RUNTIME_ONLY,
    )
    max_model_len: int = Field(4096, ge=16, description="context length of every server (--max-model-len)")
    vllm_args: str = Field(
        "", description="more `vllm serve` arguments for every server (shell-quoted, e.g. '--dtype half')"
    )
    draft_gpu_share: float = _role_share("draft", 0.15)
    target_gpu_share: float = _role_share("target", 0.45)
    reward_gpu_share: float = _role_share("reward", 0.30)
    draft_gpus: str | None = _role_gpus("draft")
    target_gpus: str | None = _role_gpus("target")
    reward_gpus: str | None = _role_gpus("reward")
    draft_tensor_parallel_size: int = _role_tp("draft")
    target_tensor_parallel_size: int = _role_tp("target")
    reward_tensor_parallel_size: int = _role_tp("reward")
    draft_port: int = _role_port("draft")
    target_port: int = _role_port("target")
    reward_port: int = _role_port("reward")
    draft_vllm_args: str = _role_args("draft")
    target_vllm_args: str = _role_args("target")
    reward_vllm_args: str = _role_args("reward")
    reward_model: str | None = Field(
        None,
        description="reward model a vllm-* reward serves (a hub name or a path; default: the reward's "
        "usual model, e.g. Qwen/Qwen2.5-Math-PRM-7B for vllm-qwen-prm)",
    )
    pooling_runner: str = Field(
        "--runner pooling",
        description="how this vLLM is told to serve a reward model ('--task reward' before vLLM 0.10)",
    )
    sleep_mode: bool = Field(
        False,
        description="where memory is short: --enable-sleep-mode, and the roles take turns on the GPU "
        "(the idle servers sleep; slow: every switch moves weights)",
        json_schema_extra=RUNTIME_ONLY,
    )
    startup_timeout: float = Field(
        900.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a server may take to start (downloads and compilation included)",
        json_schema_extra=RUNTIME_ONLY,
    )
    stop_timeout: float = Field(
        15.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a server gets to stop after SIGTERM before it is killed",
        json_schema_extra=RUNTIME_ONLY,
    )
    restarts: int = Field(
        2,
        ge=0,
        description="times a role's server that stopped is started again, for the next request (0: never)",
        json_schema_extra=RUNTIME_ONLY,
    )
    log_dir: Path | None = Field(
        None,
        description="where the servers' logs go (default: $XDG_STATE_HOME/rsdchat/vllm, ~/.local/state/…)",
        json_schema_extra=RUNTIME_ONLY,
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value.strip().lower() not in DEVICES:
            raise ValueError("give auto, gpu or cpu")
        return value.strip().lower()

    @field_validator("draft_gpus", "target_gpus", "reward_gpus")
    @classmethod
    def _gpus(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", value):
            raise ValueError("give GPU numbers separated by commas, like '0' or '1,2'")
        return value.replace(" ", "") if value is not None else None

    @field_validator("vllm_command", "vllm_args", "draft_vllm_args", "target_vllm_args", "reward_vllm_args")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split it into arguments: {exc}") from None
        taken = [word for word in words if word.split("=")[0] in RESERVED]
        if taken:
            raise ValueError(f"{taken[0].split('=')[0]} is set by rsdchat (use the role's port setting)")
        return value

    # -- per role ---------------------------------------------------------------------

    def share(self, role: Role) -> float:
        return float(getattr(self, f"{role.value}_gpu_share"))

    def gpus(self, role: Role) -> str | None:
        value: str | None = getattr(self, f"{role.value}_gpus")
        return value

    def port(self, role: Role) -> int:
        return int(getattr(self, f"{role.value}_port"))

    def logs(self) -> Path:
        return self.log_dir.expanduser() if self.log_dir else state_dir() / "vllm"

    def resolved_device(self, env: Mapping[str, str] | None = None, dev: Path = Path("/dev")) -> Device:
        """`device`, with 'auto' resolved: 'gpu' where this machine shows a GPU to vLLM, else 'cpu'."""
        if self.device != "auto":
            return "gpu" if self.device == "gpu" else "cpu"
        return "gpu" if gpu_visible(os.environ if env is None else env, dev) else "cpu"

    def argv(
        self, command: list[str], role: Role, model: str, port: int, *, device: Device | None = None
    ) -> list[str]:
        """`vllm serve MODEL …` for `role`: loopback, `port`, served as `model`; on a GPU the role's
        share of its memory, on the CPU bf16 and eager mode unless the arguments say otherwise."""
        cpu = (device or self.resolved_device()) == "cpu"
        more = shlex.split(self.vllm_args) + shlex.split(getattr(self, f"{role.value}_vllm_args"))
        head = ["--model", model] if command[-1:] == [API_SERVER] else ["serve", model]
        argv = [*command, *head, "--host", HOST, "--port", str(port)]
        argv += ["--served-model-name", model, "--max-model-len", str(self.max_model_len)]
        if not cpu:
            argv += ["--gpu-memory-utilization", f"{self.share(role):g}"]
        parallel = int(getattr(self, f"{role.value}_tensor_parallel_size"))
        if parallel > 1:
            argv += ["--tensor-parallel-size", str(parallel)]
        if role is Role.REWARD:
            argv += shlex.split(self.pooling_runner)
        if self.sleep_mode:
            argv.append("--enable-sleep-mode")
        if cpu:
            for option in CPU_DEFAULTS:
                if not _given(more, option[0]):
                    argv += option
        return argv + more

    def env(self, role: Role, base: Mapping[str, str], *, device: Device | None = None) -> dict[str, str]:
        """The server's environment: ours, with the role's GPUs and what sleep mode needs; on the
        CPU, the KV-cache size."""
        env = {**base, "PYTHONUNBUFFERED": "1"}  # the log is current when a start fails
        gpus = self.gpus(role)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        if self.sleep_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"  # vLLM serves /sleep and /wake_up only in dev mode
        if (device or self.resolved_device(base)) == "cpu":
            inherited = base.get("VLLM_CPU_KVCACHE_SPACE", "").strip()
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gib or inherited or 1)
        return env


def _given(words: list[str], option: str) -> bool:
    """Whether `words` set `option` (`--x v`, `--x=v`, or `--no-x` for a flag)."""
    negated = "--no-" + option.removeprefix("--")
    return any(w in (option, negated) or w.startswith(option + "=") for w in words)


def gpu_visible(env: Mapping[str, str], dev: Path = Path("/dev")) -> bool:
    """Whether vLLM would find a GPU here: a GPU device file, and CUDA_VISIBLE_DEVICES not hiding it."""
    hidden = env.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    return any(next(dev.glob(pattern), None) is not None for pattern in GPU_FILES)


def state_dir() -> Path:
    """rsdchat's state folder ($XDG_STATE_HOME/rsdchat, usually ~/.local/state/rsdchat)."""
    return Path(platformdirs.user_state_dir("rsdchat"))


def resolve_command(command: str) -> list[str]:
    """`vllm_command` as an argument vector whose program exists; else a ConfigError saying how to install."""
    words = shlex.split(command)
    if not words:
        raise ConfigError(f"setting vllm_command is empty: {INSTALL}")
    program = words[0]
    if os.sep in program:
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program)
    if found is None:
        where = "is not an executable file" if os.sep in program else "is not on PATH"
        raise ConfigError(f"vLLM not found: {program!r} {where}; {INSTALL} (--vllm-command)")
    return [found, *words[1:]]


def overlapping(a: str | None, b: str | None) -> bool:
    """Whether two CUDA_VISIBLE_DEVICES placements may share a GPU (unset: every GPU)."""
    if a is None or b is None:
        return True
    return bool(set(a.split(",")) & set(b.split(",")))


def check_shares(config: VllmConfig, running: Iterable[Role], role: Role, *, device: Device = "gpu") -> None:
    """Servers that may share a GPU must ask for less than all of its memory together (a ConfigError).

    Not checked in sleep mode (there the servers take turns), nor on the CPU (no GPU memory to share).
    """
    if config.sleep_mode or device == "cpu":
        return
    sharing = [r for r in running if r is not role and overlapping(config.gpus(r), config.gpus(role))]
    total = sum(config.share(r) for r in (*sharing, role))
    if total >= 1:
        names = " + ".join(f"{r.value}_gpu_share {config.share(r):g}" for r in (*sharing, role))
        raise ConfigError(
            f"{names} = {total:g}: servers on one GPU must add up to less than 1 "
            "(lower a share, place the roles on different GPUs with <role>_gpus, or use sleep_mode)"
        )
