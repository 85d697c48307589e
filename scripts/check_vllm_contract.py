"""Check rsdchat's openai backend (and the vllm backend's launcher) against a REAL vLLM, on a GPU machine.

    python scripts/check_vllm_contract.py --url http://gpu-box:8001 [--model NAME]
        [--prm-url http://gpu-box:8003] [--skywork-url URL] [--orm-url URL] [--api-key-env VAR]
    python scripts/check_vllm_contract.py --launch Qwen/Qwen2.5-Math-1.5B-Instruct
        [--launch-prm Qwen/Qwen2.5-Math-PRM-7B] [--launch-orm MODEL] [--sleep-mode] [--vllm-command vllm]

The unit tests replay vLLM's documented answers (backends/openai/tests/test_vllm_contract.py);
this script sends the same requests through the same code to a running vLLM and prints one
line per check (PASS / FAIL / INFO). With --launch it first starts the servers itself with
rsdchat-vllm's launcher (as `--backend vllm` does: loopback, free ports, GPU shares, logs),
runs the same checks on them, and checks that stopping them leaves no process behind.
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from rsdchat.core.errors import RsdchatError
from rsdchat.core.protocols import LogprobModel
from rsdchat.core.types import Context, Generation, Message, Role, StepRequest
from rsdchat.plugins import RewardContext
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
            if not isinstance(draft, LogprobModel):
                return False, "this server gives no prompt log-probabilities (not a vLLM?)"
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


async def launched_checks(args: argparse.Namespace) -> None:
    """Start the servers with the vllm backend's launcher, check them, stop them."""
    from rsdchat_vllm.backend import VllmBackend
    from rsdchat_vllm.config import VllmConfig
    from rsdchat_vllm.launcher import group_members

    config = VllmConfig(
        vllm_command=args.vllm_command,
        max_model_len=args.max_model_len,
        sleep_mode=args.sleep_mode,
        draft_gpu_share=0.3 if args.launch_prm or args.launch_orm else 0.6,
        reward_gpu_share=0.5,
    )
    backend = VllmBackend(config, say=lambda line: report(None, "launcher", line))
    launcher, pids = backend.launcher, []
    try:
        draft = backend.generator(Role.DRAFT, args.launch)  # blocks until the server is ready
        pids.append(draft.server.pid)
        report(
            True, "launched draft", f"{draft.server.url}, pid {draft.server.pid}, log {draft.server.log_path}"
        )

        async def through_the_backend() -> tuple[bool, str]:
            context = Context((Message("system", SYSTEM), Message("user", QUESTION)))
            step = await draft.generate(context, StepRequest(max_tokens=64))
            return bool(step.text), f"{step.finish_reason}: {step.text!r:.60}"

        await check(
            "vllm backend step" + (" (woken from sleep)" if args.sleep_mode else ""), through_the_backend
        )
        if not args.sleep_mode:  # with sleep mode only the backend's turns keep the right server awake
            await generator_checks(draft.server.url, args.launch, None)
        for kind, model in ((QwenPRM, args.launch_prm), (OutcomeRM, args.launch_orm)):
            if model:
                server = launcher.start(Role.REWARD, model)
                pids.append(server.pid)
                report(True, f"launched {kind.name} server", f"{server.url}, log {server.log_path}")
                await reward_check(kind, server.url, None)
    except RsdchatError as exc:
        report(False, "launch", str(exc))
    finally:
        pids += [server.pid for server in launcher.servers]
        await backend.aclose()
        left = [pid for pid in pids if group_members(pid)]
        report(
            not left,
            "stopped",
            f"processes left in groups {left}" if left else f"{len(set(pids))} servers, nothing left",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a vLLM serving a chat model (draft or target)")
    parser.add_argument("--model", help="its served model name (default: the first it lists)")
    parser.add_argument("--prm-url", help="a vLLM serving Qwen2.5-Math-PRM (--runner pooling)")
    parser.add_argument("--skywork-url", help="a vLLM serving Skywork-o1-Open-PRM with its plugin")
    parser.add_argument("--orm-url", help="a vLLM serving an outcome reward model (--runner pooling)")
    parser.add_argument("--api-key-env", help="environment variable holding the servers' API key")
    parser.add_argument(
        "--launch", metavar="MODEL", help="start a vLLM for MODEL with rsdchat-vllm, check it"
    )
    parser.add_argument("--launch-prm", metavar="MODEL", help="with --launch: also a Qwen2.5-Math-PRM server")
    parser.add_argument("--launch-orm", metavar="MODEL", help="with --launch: also an outcome reward model")
    parser.add_argument("--sleep-mode", action="store_true", help="with --launch: start them in sleep mode")
    parser.add_argument(
        "--vllm-command", default="vllm", help="with --launch: the vLLM command (default: vllm)"
    )
    parser.add_argument("--max-model-len", type=int, default=4096, help="with --launch: --max-model-len")
    args = parser.parse_args()
    if not (args.url or args.prm_url or args.skywork_url or args.orm_url or args.launch):
        parser.error("give at least one URL, or --launch MODEL")

    async def run_all() -> None:
        if args.launch:
            await launched_checks(args)
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
