"""What kind of server a role talks to, which models it serves, and how its prompts are written.

Generation goes through `/v1/completions` with the prompt written out: the chat
header (the conversation rendered by the model's chat template, assistant turn
opened) followed by the reply so far, verbatim. The chat endpoint cannot be used
for this: llama-cpp-python ignores `continue_final_message` and opens a fresh
assistant turn, and vLLM's `continue_final_message` strips the trailing blank line
every step ends with.

The header comes from the server where it can render it (vLLM: /tokenize with the
messages, then /detokenize, checked by tokenizing it back), otherwise from a Jinja
template on the client: `chat_template` (a file, the template text or "chatml"),
by default ChatML, which is what Qwen2.5 and SmolLM2 use.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rsdchat.plugin_api import BackendError, ConfigError, Message
from rsdchat_openai.http import NotFound, Pool, Replica


@dataclass(frozen=True)
class Dialect:
    """How to talk to one kind of OpenAI-compatible server."""

    name: str
    server_stop: bool  # stops at the stop strings itself and keeps them in the text
    sampling: Mapping[str, Any] = field(default_factory=dict)  # extra parameters for plain sampling
    stream_usage: bool = True  # ends the stream with a `usage` chunk when asked
    count_path: str | None = None  # counts prompt tokens when the stream has no usage
    prompt_logprobs: bool = False  # can score a given text (LogprobModel)
    renders_chat: bool = False  # /tokenize accepts messages, /detokenize gives the text back
    truncation_hint: str = ""  # what to check when an answer stream ends early


VLLM = Dialect(
    "vllm",
    server_stop=True,
    sampling={"include_stop_str_in_output": True, "add_special_tokens": False},
    prompt_logprobs=True,
    renders_chat=True,
)
# llama-cpp-python samples with repeat_penalty 1.1, top_k 40 and min_p 0.05 unless told otherwise;
# it cannot say which stop string ended a completion, so the client watches for them itself.
# Its prompt log-probabilities (echo) are off by one position unless the prompt starts with
# the model's BOS token, and cost a full-vocabulary sort per prompt token: not offered.
LLAMA_CPP_PYTHON = Dialect(
    "llama-cpp-python",
    server_stop=False,
    sampling={"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0},
    stream_usage=False,
    count_path="/extras/tokenize/count",
    truncation_hint="start llama-cpp-python with --interrupt_requests False",
)
OPENAI = Dialect("openai", server_stop=False)


@dataclass(frozen=True)
class ServerInfo:
    """What /v1/models said."""

    dialect: Dialect
    models: tuple[str, ...]
    contexts: Mapping[str, int] = field(default_factory=dict)  # model -> context length (vLLM says)


def parse_models(body: Any, pool: Pool, url: str) -> ServerInfo:
    """The dialect and served model ids from a /v1/models answer."""
    cards = body.get("data") if isinstance(body, dict) else None
    if not isinstance(cards, list) or not all(isinstance(c, dict) and "id" in c for c in cards):
        raise BackendError(
            f"{pool.role} server {url}: /v1/models gave no model list; is it an OpenAI-compatible server?"
        )
    owners = {str(card.get("owned_by", "")) for card in cards}
    if "vllm" in owners:
        dialect = VLLM
    elif owners == {"me"} and all("permissions" in card for card in cards):
        dialect = LLAMA_CPP_PYTHON
    else:
        dialect = OPENAI
    contexts = {
        str(card["id"]): card["max_model_len"]
        for card in cards
        if isinstance(card.get("max_model_len"), int) and not isinstance(card["max_model_len"], bool)
    }
    return ServerInfo(dialect, tuple(str(card["id"]) for card in cards), contexts)


def choose_model(info: ServerInfo, model: str | None, pool: Pool, url: str) -> str:
    """`model` if the server serves it; with no name, the only model it serves."""
    served = ", ".join(info.models) or "nothing"
    if model is None:
        if len(info.models) == 1:
            return info.models[0]
        raise ConfigError(
            f"setting {pool.role}_model: {pool.role} server {url} serves {served}; say which one to use"
        )
    if model not in info.models:
        # llama-cpp-python would silently answer with its default model instead.
        raise ConfigError(
            f"{pool.role} model {model!r} is not served by {url} (it serves: {served}); "
            f"pass --{_model_flag(pool.role)} with one of those names"
        )
    return model


def _merge(found: list[tuple[str, ServerInfo]], pool: Pool) -> ServerInfo:
    kinds = {info.dialect.name for _, info in found}
    if len(kinds) > 1:
        raise ConfigError(f"the {pool.role} servers are of different kinds ({', '.join(sorted(kinds))})")
    return found[0][1]


def probe(pool: Pool, model: str | None) -> tuple[ServerInfo, str]:
    """Ask every replica what it serves (blocking; run at start-up, off the event loop).

    A replica that does not answer is set aside (said once, tried again later) while another
    one answers; only when none does is its failure the error.
    """
    found: list[tuple[str, ServerInfo]] = []
    failures: list[tuple[Replica, BackendError]] = []
    said: list[str] = []
    say, pool.say = pool.say, said.append  # said only if the role can go on without them
    try:
        for replica in pool.replicas:
            try:
                body = pool.get_sync("/v1/models", url=replica.url)
            except NotFound:
                raise  # not an OpenAI-compatible server: a mistake, not an outage
            except BackendError as exc:
                failures.append((replica, exc))
                continue
            found.append((replica.url, parse_models(body, pool, replica.url)))
        if not found:
            raise failures[0][1]
        for replica, error in failures:
            if replica.down is None:  # it answered, badly (5xx, silence): set aside all the same
                pool.set_aside(replica, str(error), said=True)
    finally:
        pool.say = say
    for line in said:
        say(line)
    names = {choose_model(info, model, pool, url) for url, info in found}
    if len(names) > 1:
        raise ConfigError(f"the {pool.role} servers serve different models ({', '.join(sorted(names))})")
    info, name = _merge(found, pool), names.pop()

    def admit(body: Any, url: str) -> None:  # a replica set aside must serve the same, to come back
        other = parse_models(body, pool, url)
        if choose_model(other, name, pool, url) != name or other.dialect != info.dialect:
            raise ConfigError(f"{pool.role} server {url} now serves another kind of server or model")

    pool.admit = admit
    return info, name


# -- chat headers ------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Renderer(Protocol):
    async def header(self, messages: Sequence[Message]) -> str:
        """The conversation rendered by the chat template, with the assistant turn opened."""
        ...


def _raise(message: str) -> None:
    raise TemplateError(message)


class TemplateRenderer:
    """A Jinja chat template rendered on the client, the way transformers renders it."""

    def __init__(self, template: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(template)
        except TemplateError as exc:
            raise ConfigError(f"setting chat_template: not a valid Jinja template: {exc}") from None

    async def header(self, messages: Sequence[Message]) -> str:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return self._template.render(
                messages=chat, add_generation_prompt=True, bos_token="", eos_token=""
            )
        except TemplateError as exc:
            raise ConfigError(f"setting chat_template: rendering failed: {exc}") from None


class ServerRenderer:
    """vLLM renders with the model's own template: /tokenize the messages, /detokenize the ids.

    The text is tokenized back once and must give the same ids, so sending it as a
    prompt reads exactly what the chat endpoint would have read.
    """

    def __init__(self, pool: Pool, model: str) -> None:
        self._pool = pool
        self._model = model

    async def header(self, messages: Sequence[Message]) -> str:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        ids = token_ids(
            await self._pool.post(
                "/tokenize", {"model": self._model, "messages": chat, "add_generation_prompt": True}
            ),
            self._pool,
        )
        text = (await self._pool.post("/detokenize", {"model": self._model, "tokens": ids})).get("prompt")
        if not isinstance(text, str):
            raise BackendError(f"{self._pool.role} server: malformed /detokenize answer (no prompt text)")
        again = token_ids(
            await self._pool.post(
                "/tokenize", {"model": self._model, "prompt": text, "add_special_tokens": False}
            ),
            self._pool,
        )
        if again != ids:
            raise ConfigError(
                f"the chat template of {self._model} does not survive detokenization; "
                "set chat_template to the model's template file"
            )
        return text


def token_ids(body: Any, pool: Pool) -> list[int]:
    """The `tokens` of a vLLM /tokenize answer."""
    tokens = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise BackendError(f"{pool.role} server: malformed /tokenize answer (no token list)")
    return tokens


def load_template(setting: str) -> str:
    """`chat_template`: "chatml", a path to a Jinja file, or the template text itself."""
    if setting.strip().lower() == "chatml":
        return CHATML
    if "{%" in setting or "{{" in setting:
        return setting
    path = Path(setting).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(f"setting chat_template: {setting!r} is not 'chatml', a template, or an existing file")


def make_renderer(info: ServerInfo, pool: Pool, model: str, chat_template: str | None) -> Renderer:
    if chat_template:
        return TemplateRenderer(load_template(chat_template))
    if info.dialect.renders_chat:
        return ServerRenderer(pool, model)
    return TemplateRenderer(CHATML)


class Headers:
    """Rendered headers, kept for the conversations seen most recently (each is rendered once)."""

    def __init__(self, renderer: Renderer, size: int = 256) -> None:
        self._renderer = renderer
        self._size = size
        self._cache: OrderedDict[tuple[Message, ...], str] = OrderedDict()

    async def header(self, messages: Sequence[Message]) -> str:
        key = tuple(messages)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        text = await self._renderer.header(key)
        self._cache[key] = text
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return text


_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def guess_params(name: str) -> int:
    """Parameters from a model name ("Qwen2.5-Math-7B-Instruct" → 7e9, "smollm2-135m" → 1.35e8), else 0.

    Servers do not report parameter counts; 0 leaves the role out of the FLOPs estimate.
    """
    found = _SIZE.findall(name.replace("_", "-"))
    if not found:
        return 0
    number, unit = found[-1]
    return int(float(number) * (1e9 if unit.lower() == "b" else 1e6))


def _model_flag(role: str) -> str:
    """The flag that names `role`'s model: --draft, --target, but --reward-model (--reward is the source)."""
    return "reward-model" if role == "reward" else role
