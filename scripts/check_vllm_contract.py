"""Check rsdchat's openai backend against a REAL vLLM (run it where a GPU is).

    python scripts/check_vllm_contract.py --url http://gpu-box:8001 [--model NAME]
        [--prm-url http://gpu-box:8003] [--skywork-url URL] [--orm-url URL] [--api-key-env VAR]

The unit tests replay vLLM's documented answers (backends/openai/tests/test_vllm_contract.py);
this script sends the same requests through the same code to a running vLLM and prints one
line per check (PASS / FAIL / INFO). Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from rsdchat.errors import RsdchatError
from rsdchat.plugins import RewardContext
from rsdchat.protocols import LogprobModel
from rsdchat.types import Context, Generation, Message, Role, StepRequest
from rsdchat_openai import OpenAIBackend, OpenAIConfig
from rsdchat_openai.rewards import HttpReward, OutcomeRM, QwenPRM, SkyworkPRM

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"
GOOD, BAD = "In May she sold 48 / 2 = 24 clips.\n\n", "In May she sold 48 / 2 = 42 clips.\n\n"

failures = 0


def report(ok: bool | None, name: str, detail: str) -> None:
    global failures
    failures += ok is False
    print(f"{ {True: 'PASS', False: 'FAIL', None: 'INFO'}[ok]:4} {name}: {detail}")


async def check(name: str, work: Callable[[], Awaitable[tuple[bool | None, str]]]) -> None:
    try:
        ok, detail = await work()
    except (RsdchatError, httpx.HTTPError, KeyError, ValueError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    report(ok, name, detail)


async def generator_checks(url: str, model: str | None, key_env: str | None) -> None:
    if model is None:
        model = httpx.get(f"{url.rstrip('/')}/v1/models", timeout=10).json()["data"][0]["id"]
    backend = OpenAIBackend(OpenAIConfig(draft_url=url, draft_api_key_env=key_env))
    try:
        draft = backend.generator(Role.DRAFT, model)
        kind = draft.server.dialect.name
        report(kind == "vllm", "server kind", f"{kind}, serves {model}")
        context = Context((Message("system", SYSTEM), Message("user", QUESTION)))
        pieces: list[str] = []
        step: dict[str, Generation] = {}

        async def header() -> tuple[bool, str]:
            text = await draft.prompt(context)
            return QUESTION in text, f"{len(text)} chars, ends {text[-40:]!r}"

        async def stream() -> tuple[bool, str]:
            step["g"] = g = await draft.generate(context, StepRequest(max_tokens=128), pieces.append)
            ok = (g.finish_reason != "step" or g.text.endswith("\n\n")) and len(pieces) > 1
            ok = ok and g.usage.generated_tokens > 0 and g.usage.prefill_tokens >= 0
            lp = len(g.token_logprobs or ())
            return ok, f"{g.finish_reason}, {len(pieces)} pieces, {g.usage}, {lp} logprobs: {g.text!r:.60}"

        async def second_step() -> tuple[None, str]:
            more = await draft.generate(context.extend(step["g"].text), StepRequest(max_tokens=128))
            return (
                None,
                f"prefill after the prefix cache: {more.usage.prefill_tokens} tokens ({more.text!r:.60})",
            )

        async def prompt_logprobs() -> tuple[bool, str]:
            g = step["g"]
            assert isinstance(draft, LogprobModel)
            scored = await draft.logprobs(context, g.text)
            sampled = g.mean_logprob or 0.0
            detail = f"{len(scored.token_logprobs)} tokens, mean {scored.mean:.3f}; as sampled {sampled:.3f}"
            return len(scored.token_logprobs) > 0 and abs(scored.mean - sampled) < 0.3, detail

        async def chat_continue() -> tuple[None, str]:
            chat = [{"role": m.role, "content": m.content} for m in context.messages]
            chat.append({"role": "assistant", "content": step["g"].text})
            body = {"model": model, "messages": chat, "add_generation_prompt": False}
            body["continue_final_message"] = True
            ids = (await draft.pool.post("/tokenize", body))["tokens"]
            text = (await draft.pool.post("/detokenize", {"model": model, "tokens": ids}))["prompt"]
            return None, f"continue_final_message keeps the trailing blank line: {text.endswith(chr(10) * 2)}"

        await check("chat header", header)
        await check("streamed step", stream)
        if "g" in step:
            await check("prefix cache (second step)", second_step)
            await check("prompt logprobs", prompt_logprobs)
            await check("chat continue_final_message", chat_continue)
    finally:
        await backend.aclose()


async def reward_check(kind: type[HttpReward], url: str, key_env: str | None) -> None:
    settings = RewardContext(None, None, {"openai": OpenAIConfig(reward_url=url, reward_api_key_env=key_env)})

    async def work() -> tuple[bool, str]:
        reward = kind(settings)
        try:
            context = Context((Message("system", SYSTEM), Message("user", QUESTION)))
            good = await reward.score(context, Generation(GOOD, "step"))
            bad = await reward.score(context, Generation(BAD, "step"))
            later = await reward.score(
                context.extend(GOOD), Generation("Altogether 48 + 24 = 72.\n\n", "step")
            )
        finally:
            await reward.aclose()
        scores = f"right step {good.reward:.3f}, wrong step {bad.reward:.3f}, next step {later.reward:.3f}"
        return good.reward > bad.reward, f"{reward.model}: {scores}"

    await check(kind.name, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a vLLM serving a chat model (draft or target)")
    parser.add_argument("--model", help="its served model name (default: the first it lists)")
    parser.add_argument("--prm-url", help="a vLLM serving Qwen2.5-Math-PRM (--runner pooling)")
    parser.add_argument("--skywork-url", help="a vLLM serving Skywork-o1-Open-PRM with its plugin")
    parser.add_argument("--orm-url", help="a vLLM serving an outcome reward model (--runner pooling)")
    parser.add_argument("--api-key-env", help="environment variable holding the servers' API key")
    args = parser.parse_args()
    if not (args.url or args.prm_url or args.skywork_url or args.orm_url):
        parser.error("give at least one URL")

    async def run_all() -> None:
        if args.url:
            await generator_checks(args.url, args.model, args.api_key_env)
        checks: list[tuple[type[HttpReward], Any]] = [
            (QwenPRM, args.prm_url), (SkyworkPRM, args.skywork_url), (OutcomeRM, args.orm_url)
        ]  # fmt: skip
        for kind, url in checks:
            if url:
                await reward_check(kind, url, args.api_key_env)

    asyncio.run(run_all())
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
