"""A Qwen2ForProcessRewardModel checkpoint: the draft's backbone with the trained head.

The exact Qwen2.5-Math-PRM format, which vLLM serves on its pooling API (`vllm serve DIR
--runner pooling`) and the `qwen-prm` / `vllm-qwen-prm` rewards read unchanged: the config
names the architecture and two labels; the weights are the backbone's (`model.*`, copied
byte for byte, the language-model head left out) and the head's `score.*` (W1 padded to
H × H); the tokenizer names token 151651 `<extra_0>`, the step tag vLLM's STEP pooling reads.

The folder is built beside its destination and renamed into place: a stopped run leaves no
half checkpoint, and an existing checkpoint is only replaced by a whole one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rsdchat.core.errors import ConfigError
from rsdchat.prm import safetensors
from rsdchat.prm.head import STEP_TAG, STEP_TAG_ID, PrmHead

ARCHITECTURE = "Qwen2ForProcessRewardModel"
INDEX = "model.safetensors.index.json"
HEAD_SHARD = "prm-head.safetensors"
LEFT_OUT = ("lm_head.", "score.")  # the language-model head; a head the backbone already had
STAMP = "rsdchat-prm.json"


def _weight_files(backbone: Path) -> list[Path]:
    index = backbone / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [backbone / name for name in sorted(set(weight_map.values()))]
    files = sorted(backbone.glob("*.safetensors"))
    if not files:
        raise ConfigError(
            f"--backbone {backbone} holds no .safetensors weights (a Hugging Face model folder?)"
        )
    return files


def _config(backbone: Path, head: PrmHead) -> dict[str, Any]:
    try:
        config = json.loads((backbone / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--backbone {backbone}: no readable config.json ({exc})") from None
    if config.get("model_type") != "qwen2":
        raise ConfigError(
            f"--backbone {backbone} is a {config.get('model_type')!r} model; the Qwen2.5-Math-PRM "
            "format (Qwen2ForProcessRewardModel) needs a Qwen2 backbone"
        )
    if config.get("hidden_size") != head.hidden_size:
        raise ConfigError(
            f"--backbone {backbone} has hidden size {config.get('hidden_size')}; the head was "
            f"trained on {head.hidden_size}: is it the draft's own model?"
        )
    config.pop("quantization_config", None)
    return {**config, "architectures": [ARCHITECTURE], "num_labels": 2}


def name_step_tag(folder: Path) -> None:
    """Name token 151651 `<extra_0>` in the tokenizer files, as Qwen2.5-Math-PRM's tokenizer does."""
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    old = next((token for token, index in vocab.items() if index == STEP_TAG_ID), None)
    if old == STEP_TAG:
        return
    if old is not None:
        del vocab[old]
    vocab[STEP_TAG] = STEP_TAG_ID
    for added in data.get("added_tokens", []):
        if added["id"] == STEP_TAG_ID:
            added["content"] = STEP_TAG
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for entry in config.get("added_tokens_decoder", {}).values():
            if entry.get("content") == old:
                entry["content"] = STEP_TAG
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")


def write_checkpoint(backbone: Path, head: PrmHead, out: Path) -> Path:
    """Write the checkpoint to `out` (replacing one there only once the new one is whole)."""
    check_replaceable(out)
    config = _config(backbone, head)
    if not (backbone / "tokenizer.json").is_file():
        raise ConfigError(f"--backbone {backbone} has no tokenizer.json")
    building = out.with_name(f".{out.name}.{os.getpid()}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        for item in backbone.iterdir():  # tokenizer, chat template, generation config…
            if item.is_file() and not item.name.endswith(".safetensors") and item.name not in {
                INDEX, "config.json", STAMP, "rsdchat-checkpoint.json",
            }:  # fmt: skip
                shutil.copy2(item, building / item.name)
        name_step_tag(building)
        (building / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        weight_map: dict[str, str] = {}
        for shard in _weight_files(backbone):
            header = safetensors.read_header(shard)
            kept = {n: (shard, header, e) for n, e in header.entries.items() if not n.startswith(LEFT_OUT)}
            if kept:
                safetensors.save(building / shard.name, kept, {"format": "pt"})
                weight_map |= dict.fromkeys(kept, shard.name)
        tensors = head.tensors(pad_to=head.hidden_size)
        safetensors.save(building / HEAD_SHARD, tensors, {"format": "pt"})
        weight_map |= dict.fromkeys(tensors, HEAD_SHARD)
        index = {"metadata": {}, "weight_map": weight_map}
        (building / INDEX).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        (building / STAMP).write_text(json.dumps(head.about, indent=1) + "\n", encoding="utf-8")
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        if out.exists():
            os.replace(out, old)
        os.replace(building, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not a checkpoint this module wrote (it may be the user's)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / STAMP).is_file())):
        raise ConfigError(
            f"{out} exists and is not a checkpoint rsdchat wrote: move it away or choose another --out"
        )
