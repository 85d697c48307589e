"""Lever 6: can the target read an accepted draft step while the draft writes the next one?

    .venv/bin/python benchmarks/hide_prefill.py [--rounds 5] [--step-tokens 48]

Today RSD reads lazily: the draft writes step i+1 (both cores), and only when the target
must write does it read the accepted steps it has not seen (both cores). Hiding that read
means running the two at once, one core each. On the embedded pair this measures, per
round, the same work both ways on real models (greedy, the same tokens):

- lazy:       the draft writes `step-tokens` tokens (2 threads), then the target reads a step of
              `step-tokens` tokens (2 threads);
- overlapped: both at once in two threads, the draft and the target with 1 thread each.

It prints the seconds of each and their ratio. Overlapping pays only where one core of each
does the work faster than two cores one after the other: on a CPU that generation already
saturates (memory bandwidth), it does not.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat_llamacpp.embedded import resolve_model

QUESTION = (
    "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
    "per fresh duck egg. How much in dollars does she make every day at the farmers' market?"
)


@dataclass
class Pair:
    draft: Any
    target: Any


def load(threads: int) -> Pair:
    from llama_cpp import Llama

    def one(key: str) -> Any:
        path = str(resolve_model(key))
        return Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)

    return Pair(one("qwen2.5-coder-0.5b"), one("qwen2.5-coder-1.5b"))


def prompt_tokens(llm: Any) -> list[int]:
    text = (
        f"<|im_start|>system\n{MATH_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    return list(llm.tokenize(text.encode(), special=True))


def ready(pair: Pair, context: list[int]) -> None:
    """Both models hold `context` in their caches, as after the last accepted step."""
    for llm in (pair.draft, pair.target):
        llm.reset()
        llm.eval(context)


def write(llm: Any, n: int) -> list[int]:
    """Greedy: `n` tokens after what the model holds; the tokens written."""
    out: list[int] = []
    for _ in range(n):
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        out.append(token)
        llm.eval([token])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-tokens", type=int, default=48)
    args = parser.parse_args()
    n = args.step_tokens
    both, single = load(2), load(1)
    context = prompt_tokens(both.draft)
    ready(both, context)
    step = write(both.draft, n)  # a real draft step: what the target reads
    lazy, overlapped = [], []
    for _ in range(args.rounds):
        ready(both, context)
        started = time.perf_counter()
        write(both.draft, n)
        both.target.eval(step)
        lazy.append(time.perf_counter() - started)

        ready(single, context)
        started = time.perf_counter()
        reader = threading.Thread(target=single.target.eval, args=(step,))
        reader.start()
        write(single.draft, n)
        reader.join()
        overlapped.append(time.perf_counter() - started)
    lazy_s, over_s = statistics.median(lazy), statistics.median(overlapped)
    print(f"{n}-token step, median of {args.rounds} rounds")
    print(f"lazy (draft writes, then target reads; 2 threads each): {lazy_s:.2f} s")
    print(f"overlapped (at once, 1 thread each):                    {over_s:.2f} s")
    print(f"overlapped / lazy: {over_s / lazy_s:.2f}")


if __name__ == "__main__":
    main()
