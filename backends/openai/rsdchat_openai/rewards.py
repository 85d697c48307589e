"""Reward models served over HTTP (vLLM), as rsdchat reward sources.

Registered in the entry-point group `rsdchat.rewards` as `RewardPlugin`s (the reward
server's address and model come from this plugin's settings, `[backends.openai]`):

- `qwen-prm`: Qwen2.5-Math-PRM-7B/72B on vLLM's pooling API, as its model card feeds it:
  the card's system prompt, the conversation's user (and earlier) turns, and an assistant
  turn holding the steps joined by `<extra_0>` with one after the last; the reward is the
  positive-class probability at the last `<extra_0>` (the step being judged).
- `skywork-prm`: Skywork-o1-Open-PRM (value head) through the embeddings endpoint of
  its vLLM plugin, which needs vLLM 0.6.x (the plugin pins 0.6.4.post1): token ids of
  BOS + question + "\\n", then each step's tokens and the step token ("\\n\\n", as
  Skywork's reference code marks steps); the reward is the sigmoid of the value at the
  last step token. A server running another vLLM is refused at start, in one line.
- `orm`: an outcome reward model such as Skywork-Reward-Llama-3.1-8B on vLLM's
  /classify: one unbounded score for the reply so far (the paper's ORM mode, δ = 0).

Each step costs one scoring request holding the conversation up to and including
that step, never more. Skywork's token ids are built from pieces tokenized once
each (step texts do not change once written), and the server's prefix cache can
reuse the common prefix of successive requests.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any, Literal

from rsdchat.plugin_api import (
    BackendError,
    ConfigError,
    Context,
    Generation,
    Message,
    RewardContext,
    RewardPlugin,
    Role,
    RoleCheck,
    RsdchatError,
    Score,
    Usage,
)
from rsdchat_openai.config import BackendConfig, OpenAIConfig
from rsdchat_openai.generator import prefill
from rsdchat_openai.http import NotFound, Pool
from rsdchat_openai.wire import guess_params, probe, token_ids

QWEN_STEP_TAG = "<extra_0>"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."  # the model card's
SKYWORK_STEP_TOKEN = "\n\n"  # the step token of Skywork's reference code (its last token marks a step)
SKYWORK_BOS = "<|endoftext|>"  # the BOS of Skywork-o1-Open-PRM's Qwen2.5 tokenizer
SKYWORK_VLLM = "0.6.4.post1"  # the vLLM Skywork's plugin (skywork-o1-prm-inference) is written for
SKYWORK_NEEDS = (
    f"skywork-prm needs vLLM {SKYWORK_VLLM} (0.6.x) with Skywork's skywork-o1-prm-inference plugin, "
    "whose value head gives one value per token on /v1/embeddings"
)


def split_steps(response: str, delimiter: str) -> list[str]:
    """The accepted steps of a reply, without their delimiters or surrounding blanks."""
    return [part.strip() for part in response.split(delimiter) if part.strip()]


class HttpReward:
    """What the reward sources share: the reward server, its model, the request plumbing."""

    name = "http-reward"
    kind: Literal["process", "outcome"] = "process"
    default_delta = 0.7
    bounds: tuple[float, float] | None = (0.0, 1.0)
    HOW = "serve the reward model with vLLM"  # how to fix a server that lacks the API

    def __init__(self, context: RewardContext) -> None:
        settings = context.config("openai", OpenAIConfig)
        config = BackendConfig.of(settings)
        self.pool = Pool(config.endpoint(Role.REWARD))
        self.server, self.model = probe(self.pool, config.reward_model)
        self.n_params = settings.params(Role.REWARD) or guess_params(self.model)  # 0: unknown
        self.delimiter = context.step_delimiter

    async def aclose(self) -> None:
        await self.pool.aclose()

    def steps(self, context: Context, step: Generation) -> list[str]:
        """The steps so far plus the one being judged (which may be empty text)."""
        return [*split_steps(context.response, self.delimiter), step.text.strip()]

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the reward server; a missing API gets a hint on how to serve the model."""
        try:
            answer = await self.pool.post(path, body)
        except NotFound as exc:
            raise BackendError(f"{exc} — {self.HOW}") from None
        if not isinstance(answer, dict):
            raise BackendError(self.malformed(path, "not a JSON object"))
        return answer

    def malformed(self, path: str, what: str) -> str:
        return f"reward server ({self.model}): unexpected {path} answer: {what}"

    def usage(self, answer: dict[str, Any], started: float) -> Usage:
        usage = answer.get("usage")
        return Usage(prefill(usage) if isinstance(usage, dict) else 0, 0, time.perf_counter() - started)

    async def score(self, context: Context, step: Generation) -> Score:
        raise NotImplementedError

    async def diagnose(self) -> RoleCheck:
        """Score one tiny step: proves the server, the model and the reward API in one go."""
        context = Context((Message("user", "What is 2 + 3?"),))
        started = time.perf_counter()
        where = ", ".join(r.url for r in self.pool.replicas)
        check = RoleCheck(Role.REWARD.value, "openai", f"{self.name}: {self.model}", where, True, True)
        try:
            score = await self.score(context, Generation("2 + 3 = 5.\n\n", "step"))
        except RsdchatError as exc:
            return check.replace(reward_api=False, error=str(exc))
        latency = (time.perf_counter() - started) * 1000
        return check.replace(reward_api=True, latency_ms=latency, notes=(f"probe reward {score.reward:.3g}",))


class QwenPRM(HttpReward):
    """Qwen2.5-Math-PRM: positive-class probability at each `<extra_0>` (vLLM pooling API)."""

    name = "qwen-prm"
    HOW = "serve the PRM with `vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling`"

    def __init__(self, context: RewardContext) -> None:
        super().__init__(context)
        self._task: str | None = "token_classify"  # dropped for a vLLM that predates pooling tasks
        self._tag_id: int | None = None

    async def score(self, context: Context, step: Generation) -> Score:
        started = time.perf_counter()
        steps = self.steps(context, step)
        chat = qwen_prm_chat(context, steps)
        answer = await self._pool_request(chat)
        rows = pooling_rows(answer, self.malformed("/pooling", "no data rows"))
        if len(rows) == len(steps):  # STEP pooling: one row per <extra_0>
            row = rows[-1]
        elif len(rows) == _prompt_tokens(answer):  # one row per token: find the tags
            row = rows[(await self._tag_positions(chat, len(steps)))[-1]]
        else:
            raise BackendError(
                f"reward server ({self.model}): /pooling gave {len(rows)} rows for {len(steps)} steps; "
                f"is it a process reward model? ({self.HOW})"
            )
        return Score(
            positive_probability(row, self.malformed("/pooling", "rows are not 2-class")),
            self.usage(answer, started),
        )

    async def _pool_request(self, chat: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat,
            "add_generation_prompt": False,
            "encoding_format": "float",
        }
        if self._task:
            body["task"] = self._task
        try:
            return await self.post("/pooling", body)
        except BackendError as exc:
            if not self._task or "task" not in str(exc).lower():
                raise
            self._task = None
            return await self._pool_request(chat)

    async def _tag_positions(self, chat: list[dict[str, str]], expected: int) -> list[int]:
        if self._tag_id is None:
            body = {"model": self.model, "prompt": QWEN_STEP_TAG, "add_special_tokens": False}
            ids = token_ids(await self.post("/tokenize", body), self.pool)
            if len(ids) != 1:
                raise BackendError(
                    f"reward server ({self.model}): {QWEN_STEP_TAG} is not one token; not a Qwen PRM"
                )
            self._tag_id = ids[0]
        body = {"model": self.model, "messages": chat, "add_generation_prompt": False}
        ids = token_ids(await self.post("/tokenize", body), self.pool)
        positions = [i for i, token in enumerate(ids) if token == self._tag_id]
        if len(positions) != expected:
            raise BackendError(
                f"reward server ({self.model}): found {len(positions)} step tags for {expected} steps"
            )
        return positions


class SkyworkPRM(HttpReward):
    """Skywork-o1-Open-PRM: sigmoid of the value head at each step token (vLLM 0.6.x and Skywork's plugin).

    Skywork's plugin pins vLLM 0.6.4.post1 and its V0 engine; a later vLLM neither loads the
    plugin nor answers /v1/embeddings with one value per token. Such a server is refused at
    start (its /version), and an answer of another shape at the first step, each in one line.
    """

    name = "skywork-prm"
    HOW = f"serve Skywork-o1-Open-PRM with vLLM {SKYWORK_VLLM} and the skywork-o1-prm-inference plugin"

    def __init__(self, context: RewardContext, *, bos: str = SKYWORK_BOS) -> None:
        super().__init__(context)
        self.bos = bos
        self._ids: OrderedDict[str, list[int]] = OrderedDict()  # text -> token ids, recent first out
        for replica in self.pool.replicas:
            version = self._vllm_version(replica.url)
            if version is not None and not version.startswith("0.6."):
                raise ConfigError(
                    f"reward server {replica.url} runs vLLM {version}: {SKYWORK_NEEDS}; "
                    "with this vLLM use qwen-prm or orm"
                )

    def _vllm_version(self, url: str) -> str | None:
        """The vLLM version a reward server says it runs (/version); None where it does not say."""
        try:
            answer = self.pool.get_sync("/version", url=url)
        except RsdchatError:  # not vLLM, or no answer: the first step's answer is checked instead
            return None
        version = answer.get("version") if isinstance(answer, dict) else None
        return version.strip() if isinstance(version, str) and version.strip() else None

    async def score(self, context: Context, step: Generation) -> Score:
        started = time.perf_counter()
        ids = await self.input_ids(context, step)
        body = {"model": self.model, "input": ids, "encoding_format": "float"}
        answer = await self.post("/v1/embeddings", body)
        try:
            values = answer["data"][0]["embedding"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(self.malformed("/v1/embeddings", "no embedding")) from None
        if not isinstance(values, list) or len(values) != len(ids) or not isinstance(values[-1], int | float):
            got = len(values) if isinstance(values, list) else type(values).__name__
            raise BackendError(
                f"reward server ({self.model}): /v1/embeddings gave {got} values for {len(ids)} tokens, "
                f"not one per token: {SKYWORK_NEEDS}"
            )
        return Score(_sigmoid(float(values[-1])), self.usage(answer, started))

    async def input_ids(self, context: Context, step: Generation) -> list[int]:
        """What the value head reads, as Skywork's reference builds it: BOS + question + "\\n", then
        each step's tokens followed by the step token's last token."""
        step_token = (await self._tokens(SKYWORK_STEP_TOKEN))[-1:]
        ids = list(await self._tokens(self.bos + context.question + "\n"))
        for text in self.steps(context, step):
            ids += (await self._tokens(text) if text else []) + step_token
        return ids

    async def _tokens(self, text: str) -> list[int]:
        if text not in self._ids:
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
            self._ids[text] = token_ids(await self.post("/tokenize", body), self.pool)
            while len(self._ids) > 4096:
                self._ids.popitem(last=False)
        return self._ids[text]


class OutcomeRM(HttpReward):
    """An outcome reward model: one unbounded score for the whole reply so far (vLLM /classify)."""

    name = "orm"
    kind: Literal["process", "outcome"] = "outcome"
    default_delta = 0.0  # the paper's ORM setting
    bounds: tuple[float, float] | None = None  # unbounded scores
    HOW = "serve the reward model with `vllm serve MODEL --runner pooling` (a sequence-classification model)"

    async def score(self, context: Context, step: Generation) -> Score:
        started = time.perf_counter()
        chat = [{"role": m.role, "content": m.content} for m in context.messages]
        chat.append({"role": "assistant", "content": (context.response + step.text).strip()})
        body = {
            "model": self.model,
            "messages": chat,
            "add_generation_prompt": False,
            "use_activation": False,  # the raw score, not squashed by a sigmoid
            "activation": False,  # the same, for vLLM before use_activation
        }
        answer = await self.post("/classify", body)
        try:
            probs = answer["data"][0]["probs"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(self.malformed("/classify", "no data[0].probs")) from None
        if not isinstance(probs, list) or len(probs) != 1 or not isinstance(probs[0], int | float):
            raise BackendError(
                f"reward server ({self.model}): /classify gave {probs!r:.60}; "
                "an outcome reward model gives one score"
            )
        return Score(float(probs[0]), self.usage(answer, started))


def qwen_prm_chat(context: Context, steps: list[str]) -> list[dict[str, str]]:
    """What Qwen2.5-Math-PRM reads, as its model card feeds it: the card's system prompt (in place of
    the conversation's), the conversation's other turns, and the steps joined and ended by `<extra_0>`."""
    chat = [{"role": "system", "content": QWEN_SYSTEM}]
    chat += [{"role": m.role, "content": m.content} for m in context.messages if m.role != "system"]
    chat.append({"role": "assistant", "content": QWEN_STEP_TAG.join(steps) + QWEN_STEP_TAG})
    return chat


def pooling_rows(answer: dict[str, Any], malformed: str) -> list[Any]:
    """`data[0].data` of a /pooling answer: a list of rows (or of numbers)."""
    try:
        rows = answer["data"][0]["data"]
    except (KeyError, IndexError, TypeError):
        raise BackendError(malformed) from None
    if not isinstance(rows, list):
        raise BackendError(malformed)
    return rows


def positive_probability(row: Any, malformed: str) -> float:
    """P(positive) from a 2-class row: probabilities as given, or logits through a softmax."""
    if not isinstance(row, list) or len(row) != 2 or not all(isinstance(x, int | float) for x in row):
        raise BackendError(f"{malformed} (got {row!r:.60})")
    negative, positive = float(row[0]), float(row[1])
    if 0.0 <= negative <= 1.0 and 0.0 <= positive <= 1.0 and abs(negative + positive - 1.0) < 1e-3:
        return positive
    top = max(negative, positive)
    return math.exp(positive - top) / (math.exp(negative - top) + math.exp(positive - top))


def _prompt_tokens(answer: dict[str, Any]) -> int | None:
    usage = answer.get("usage")
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) else None


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# -- the entry points ----------------------------------------------------------------------

QWEN_PRM = RewardPlugin(
    "qwen-prm",
    "Qwen2.5-Math-PRM served by vLLM (pooling API): P(step correct) in [0, 1]",
    QwenPRM,
    cost="reward model",
)
SKYWORK_PRM = RewardPlugin(
    "skywork-prm",
    f"Skywork-o1-Open-PRM on vLLM {SKYWORK_VLLM} with Skywork's plugin (embeddings API): value in [0, 1]",
    SkyworkPRM,
    cost="reward model",
)
ORM = RewardPlugin(
    "orm",
    "an outcome reward model served by vLLM (/classify): one unbounded score per reply so far",
    OutcomeRM,
    cost="reward model",
)
