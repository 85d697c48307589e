"""Build the checkpoints that vLLM's CPU build serves, from the GGUF files the Python packages ship.

Runs in vLLM's own environment (`.venv-vllm`, which has torch, transformers, gguf):

    .venv-vllm/bin/python scripts/vllm_checkpoints.py --out DIR --smollm2 SMOLLM2.gguf --qwen QWEN-0.5B.gguf

No model hub is needed. vLLM's CPU path does not load GGUF, so transformers dequantizes each file
and the model is rebuilt from its config (`save_pretrained` refuses a model loaded from GGUF) and
saved in bf16. Four checkpoints, each in DIR/NAME:

- `smollm2`: SmolLM2-135M-Instruct, a generator (`LlamaForCausalLM`);
- `qwen`: Qwen2.5-Coder-0.5B-Instruct, the embedded draft, a generator (`Qwen2ForCausalLM`), which
  vLLM also serves as an embedding model (`--runner pooling --convert embed`): the draft's hidden
  states that `rsdchat train-prm --states-url` reads;
- `qwen-prm`: the Qwen2.5-Coder-0.5B backbone with a process-reward head, in the exact
  Qwen2.5-Math-PRM format (`Qwen2ForProcessRewardModel`: `score` = Linear(H,H)·ReLU·Linear(H,2);
  token 151651 named `<extra_0>`, the step tag vLLM's STEP pooling reads). The head is seeded
  random: the checkpoint proves the format and the wire, not a reward's quality;
- `smollm2-orm`: SmolLM2 as an outcome reward model (`LlamaForSequenceClassification`,
  one label), which vLLM serves on `/classify`.

Each is built in a temp folder and renamed into place; a stamp file written last records the
recipe and the source, so a rerun skips what is built and rebuilds what is stale or cut short.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

RECIPE = 1
STAMP = "rsdchat-checkpoint.json"
STEP_TAG_ID, STEP_TAG = 151651, "<extra_0>"


def _stamp(source: Path, kind: str) -> dict[str, Any]:
    return {"recipe": RECIPE, "kind": kind, "source": str(source), "source_size": source.stat().st_size}


def is_built(folder: Path, source: Path, kind: str) -> bool:
    """Whether `folder` holds a whole checkpoint made by this recipe from `source`."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return False
    files = stamp.get("files", {})
    whole = all((folder / f).is_file() and (folder / f).stat().st_size == n for f, n in files.items())
    wanted = _stamp(source, kind)
    return bool(files) and whole and {key: stamp.get(key) for key in wanted} == wanted


def _load(gguf: Path) -> tuple[Any, Any]:
    """The model and tokenizer in a GGUF file, dequantized to bf16, free of GGUF's quantization note."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # vLLM would look for a GGUF quantization it cannot run on CPU
    return loaded, tokenizer


def _generator(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM

    loaded, tokenizer = _load(gguf)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _prm(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    loaded, tokenizer = _load(gguf)
    config = loaded.config
    hidden = config.hidden_size
    generator = torch.Generator().manual_seed(0)

    def weight(*shape: int) -> Any:
        return (torch.randn(*shape, generator=generator) / hidden**0.5).to(torch.bfloat16)

    tensors = {name: value for name, value in loaded.state_dict().items() if not name.startswith("lm_head.")}
    tensors |= {"score.0.weight": weight(hidden, hidden), "score.0.bias": weight(hidden)}
    tensors |= {"score.2.weight": weight(2, hidden), "score.2.bias": weight(2)}
    out.mkdir(parents=True)
    contiguous = {name: value.contiguous() for name, value in tensors.items()}
    save_file(contiguous, out / "model.safetensors", metadata={"format": "pt"})
    config.architectures = ["Qwen2ForProcessRewardModel"]
    config.num_labels = 2
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _name_step_tag(out)


def _name_step_tag(out: Path) -> None:
    """Name token 151651 `<extra_0>` in the tokenizer (rsdchat's own checkpoint writer does it), and check."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # rsdchat's source: this venv lacks it
    from rsdchat.prm.checkpoint import name_step_tag

    name_step_tag(out)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(out)("a<extra_0>b")["input_ids"]
    if STEP_TAG_ID not in ids:
        raise SystemExit(f"vllm_checkpoints: {STEP_TAG} does not tokenize to {STEP_TAG_ID} in {out}")


def _orm(gguf: Path, out: Path) -> None:
    import torch
    from transformers import LlamaForSequenceClassification

    loaded, tokenizer = _load(gguf)
    config = loaded.config
    config.architectures, config.num_labels = ["LlamaForSequenceClassification"], 1
    model = LlamaForSequenceClassification(config).to(torch.bfloat16)
    state = {k: v for k, v in loaded.state_dict().items() if not k.startswith("lm_head.")}
    generator = torch.Generator().manual_seed(0)
    head = torch.randn(1, config.hidden_size, generator=generator) * 0.05
    state["score.weight"] = head.to(torch.bfloat16)
    model.load_state_dict(state)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


BUILDERS = {
    "smollm2": ("smollm2", _generator),
    "qwen": ("qwen", _generator),
    "qwen-prm": ("qwen", _prm),
    "smollm2-orm": ("smollm2", _orm),
}


def build(name: str, source: Path, out_dir: Path) -> bool:
    """Build checkpoint `name` into out_dir/name unless it is there already; whether it was built."""
    folder = out_dir / name
    if is_built(folder, source, name):
        return False
    started = time.monotonic()
    tmp = out_dir / f".{name}.{os.getpid()}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        BUILDERS[name][1](source, tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        (tmp / STAMP).write_text(json.dumps({**_stamp(source, name), "files": files}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"vllm_checkpoints: built {folder} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder that holds the checkpoints")
    parser.add_argument("--smollm2", type=Path, required=True, help="SmolLM2-135M-Instruct GGUF")
    parser.add_argument("--qwen", type=Path, required=True, help="Qwen2.5-Coder-0.5B-Instruct GGUF")
    parser.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="build only these")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    sources = {"smollm2": args.smollm2, "qwen": args.qwen}
    for name in args.only or BUILDERS:
        source = sources[BUILDERS[name][0]]
        if not source.is_file():
            raise SystemExit(f"vllm_checkpoints: {source} is not a file")
        build(name, source, args.out)


if __name__ == "__main__":
    main()
