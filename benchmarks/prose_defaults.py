"""Which reward and δ let the draft keep a fair share of an open-ended (prose) chat answer?

For each prompt of benchmarks/prose_prompts.jsonl in the chosen split, the target writes its
answer alone (target-only), then RSD writes one under each candidate `reward@δ`, in the chat
style (the chat system prompt, no stop at a \\boxed{} answer, steps cut at sentences or
paragraphs). For each candidate it reports

- the share of draft tokens kept: accepted draft tokens / answer tokens (over all prompts);
- drafts kept: accepted / judged draft steps;
- the target's pairwise preference of RSD's answer over target-only's: the target is asked
  "Which answer is better, A or B?" and P(A) vs P(B) is read off its log-probabilities, in
  both orders (RSD as A, then as B) to cancel position bias. An RSD answer identical to the
  target's is a tie without asking. Preference > 0.55 is a win, < 0.45 a loss, else a tie.

Greedy (temperature 0), answers capped at --max-tokens. Every step and every read of the models
is cached by its context (--cache, a pickle), so a draft step shared by several δ is written
once and a rerun with one more candidate only pays for what is new:

    .venv/bin/python benchmarks/prose_defaults.py --split tune \\
        --configs 'arithmetic*draft-confidence@0.88,draft-confidence@0.7,draft-confidence@0.5,...'
    .venv/bin/python benchmarks/prose_defaults.py --split held-out --configs draft-confidence@0.5

Rows (one per prompt and candidate) go to --out (JSONL); the table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsdchat.core.policy import Mode
from rsdchat.core.protocols import Feature, LogprobModel, Logprobs, StepGenerator, TokenSink
from rsdchat.core.trace import Trace
from rsdchat.core.types import Context, Generation, Message, ModelInfo, Role, StepRequest
from rsdchat.in_force import ChatExtras, Style, in_force
from rsdchat.prompts import CHAT_SYSTEM_PROMPT, build_messages
from rsdchat.runtime import open_runtime
from rsdchat.settings import Settings

HERE = Path(__file__).parent
PROMPTS = HERE / "prose_prompts.jsonl"
WIN = 0.05  # a preference this far from 0.5 is a win or a loss; closer, a tie

JUDGE_SYSTEM = "You are a fair judge. You compare two answers to the same request."
JUDGE_PROMPT = (
    "Request:\n{question}\n\n[Answer A]\n{a}\n[End of answer A]\n\n[Answer B]\n{b}\n[End of answer B]\n\n"
    "Which answer is better: more helpful, correct, complete and well written, without repetition?"
)
JUDGE_REPLY = "The better answer is Answer"  # the judge's reply begins so; " A" or " B" is read next
"""Asked plainly ("Reply with A or B"), the 1.5B target gives P(A) 0.52-0.60 whatever the answers, even
for a reply that repeats "It is a list." four times; led into its reply it tells them apart (0.25)."""


def context_key(context: Context) -> tuple[Any, ...]:
    return (tuple((m.role, m.content) for m in context.messages), context.response)


class Cached:
    """A model whose steps and log-probabilities are remembered by context (greedy: deterministic)."""

    def __init__(self, model: StepGenerator, role: str, store: dict[tuple[Any, ...], Any]) -> None:
        self.model, self.role, self.store = model, role, store
        self.features: frozenset[Feature] = getattr(model, "features", frozenset())
        self.hits = self.misses = 0

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    async def generate(
        self, context: Context, request: StepRequest, on_token: TokenSink | None = None
    ) -> Generation:
        assert request.temperature == 0, "the cache holds greedy steps only"
        key = ("step", self.role, context_key(context), request.stop)
        found: list[tuple[int, Generation]] = self.store.get(key, [])
        for budget, generation in found:
            tokens = generation.usage.generated_tokens
            fits = generation.finish_reason != "length" and tokens <= request.max_tokens
            if budget == request.max_tokens or fits:
                self.hits += 1
                return generation
        self.misses += 1
        generation = await self.model.generate(context, request, None)
        self.store.setdefault(key, []).append((request.max_tokens, generation))
        return generation

    async def logprobs(self, context: Context, continuation: str) -> Logprobs:
        key = ("logprobs", self.role, context_key(context), continuation)
        if key not in self.store:
            assert isinstance(self.model, LogprobModel)
            self.misses += 1
            self.store[key] = await self.model.logprobs(context, continuation)
        else:
            self.hits += 1
        scored: Logprobs = self.store[key]
        return scored


@dataclass(frozen=True)
class Candidate:
    reward: str
    delta: float
    steps: str

    @property
    def label(self) -> str:
        return f"{self.reward} δ {self.delta:g} · {self.steps}"


def parse_configs(text: str, steps: Sequence[str]) -> list[Candidate]:
    """'draft-confidence@0.6,0.5;target-logprob@0.5' → candidates, each in every `steps`."""
    found = []
    for part in text.replace(" ", ";").split(";"):
        if not part.strip():
            continue
        reward, _, deltas = part.partition("@")
        for step in steps:
            found += [Candidate(reward.strip(), float(d), step) for d in deltas.split(",") if d.strip()]
    return found


async def prefer(target: Cached, question: str, first: str, other: str) -> float:
    """P(the target prefers `first` over `other`), averaged over both orders."""

    async def p_a(a: str, b: str) -> float:
        prompt = JUDGE_PROMPT.format(question=question, a=a.strip(), b=b.strip())
        context = Context((Message("system", JUDGE_SYSTEM), Message("user", prompt)), JUDGE_REPLY)
        lp = {x: sum((await target.logprobs(context, f" {x}")).token_logprobs) for x in ("A", "B")}
        top = max(lp.values())
        ea, eb = (math.exp(lp[x] - top) for x in ("A", "B"))
        return ea / (ea + eb)

    return (await p_a(first, other) + (1 - await p_a(other, first))) / 2


def shares(trace: Trace) -> dict[str, Any]:
    steps = trace.answer_steps
    tokens = sum(s.tokens for s in steps)
    drafted = sum(s.tokens for s in steps if s.author is Role.DRAFT)
    acceptance = trace.acceptance
    rewards = [round(s.reward, 4) for s in trace.steps if s.reward is not None and math.isfinite(s.reward)]
    return {
        "tokens": tokens,
        "draft_tokens": drafted,
        "judged": acceptance.judged,
        "accepted": acceptance.accepted,
        "rewards": rewards,
        "finish": trace.finish_reason,
    }


def table(rows: list[dict[str, Any]]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["label"], []).append(row)
    lines = [
        "| reward · δ · steps | prompts | draft tokens kept | drafts kept "
        "| RSD vs target-only (win/tie/loss) | wins or ties | mean preference |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, group in by.items():
        tokens = sum(r["tokens"] for r in group)
        kept = sum(r["draft_tokens"] for r in group) / tokens if tokens else 0.0
        judged, accepted = sum(r["judged"] for r in group), sum(r["accepted"] for r in group)
        wins = sum(r["preference"] > 0.5 + WIN for r in group)
        losses = sum(r["preference"] < 0.5 - WIN for r in group)
        ties = len(group) - wins - losses
        mean = sum(r["preference"] for r in group) / len(group)
        lines.append(
            f"| {label} | {len(group)} | {kept:.0%} | {accepted}/{judged} | {wins}/{ties}/{losses} "
            f"| {(wins + ties) / len(group):.0%} | {mean:.2f} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    prompts = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [p for p in prompts if p["split"] == args.split][: args.limit or None]
    candidates = parse_configs(args.configs, args.steps.split(","))
    store: dict[tuple[Any, ...], Any] = {}
    cache = Path(args.cache)
    if cache.exists():
        store = pickle.loads(cache.read_bytes())
    base = Settings().replace(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    runtime = await open_runtime(base, Mode.RSD, with_reward=False)
    engine = runtime.engine
    assert engine.draft is not None and engine.target is not None
    draft, target = Cached(engine.draft, "draft", store), Cached(engine.target, "target", store)
    engine.draft, engine.target = draft, target
    rewards = {c.reward: await runtime.make_reward(c.reward) for c in candidates}
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for prompt in prompts:
            messages = build_messages(CHAT_SYSTEM_PROMPT, prompt["question"])
            alone: dict[str, str] = {}
            for steps in dict.fromkeys(c.steps for c in candidates):
                extras = ChatExtras(style=Style.CHAT, steps=steps)
                policy = in_force(base.replace(mode=Mode.TARGET_ONLY), None, extras).policy
                alone[steps] = (await engine.solve(messages, policy)).text
            for candidate in candidates:
                extras = ChatExtras(style=Style.CHAT, steps=candidate.steps)
                settings = base.replace(reward=candidate.reward, delta=candidate.delta)
                chosen = in_force(settings, rewards[candidate.reward], extras)
                assert chosen.system == CHAT_SYSTEM_PROMPT and not chosen.policy.stop_at_answer
                trace = await engine.solve(messages, chosen.policy)
                other = alone[candidate.steps]
                same = trace.text.strip() == other.strip()
                preference = 0.5 if same else await prefer(target, prompt["question"], trace.text, other)
                row = {
                    "split": args.split,
                    "id": prompt["id"],
                    "kind": prompt["kind"],
                    "label": candidate.label,
                    "reward": candidate.reward,
                    "delta": candidate.delta,
                    "steps": candidate.steps,
                    **shares(trace),
                    "preference": round(preference, 4),
                    "same_as_target": same,
                    "answer": trace.text,
                    "target_only": other,
                }
                rows.append(row)
                print(
                    f"{prompt['id']} {candidate.label}: kept {row['draft_tokens']}/{row['tokens']} tokens, "
                    f"{row['accepted']}/{row['judged']} drafts, preference {preference:.2f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
            cache.write_bytes(pickle.dumps(store))
    finally:
        await runtime.aclose()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"\n{args.split}, {len(prompts)} prompts, max {args.max_tokens} tokens; rows appended to {out}")
    cached = draft.hits + target.hits
    print(f"model reads: {draft.misses} draft + {target.misses} target new, {cached} cached")
    print(table(rows))


if __name__ == "__main__":
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--split", default="tune", choices=("tune", "held-out"))
    parser.add_argument("--configs", default="arithmetic*draft-confidence@0.88;draft-confidence@0.7,0.5")
    parser.add_argument("--steps", default="sentence", help="sentence, paragraph or both: sentence,paragraph")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0, help="the first N prompts of the split (0: all)")
    parser.add_argument("--out", default=str(HERE / "results" / "prose-tune.jsonl"))
    parser.add_argument("--cache", default="/tmp/rsdchat-prose-cache.pkl")
    asyncio.run(main(parser.parse_args()))
