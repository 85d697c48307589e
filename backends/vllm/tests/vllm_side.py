"""Run inside vLLM's own environment (.venv-vllm): vLLM's argument parser and request models judge
what rsdchat writes. Reads one JSON object on stdin, prints one on stdout:

- {"argv": [...]}: the `vllm serve` arguments parsed by vLLM's parser -> {"args": {dest: value}};
- {"requests": [[path, body], ...]}: each body validated by vLLM's request model for that path
  -> {"results": [{"path", "error", "unknown"}]} (`unknown`: fields vLLM would ignore).

vLLM moves these between releases: each is looked up where it lives now, then where it lived.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def _first(*candidates: tuple[str, str]) -> Any:
    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {candidates}")


def parse(argv: list[str]) -> dict[str, Any]:
    flexible = _first(
        ("vllm.utils.argparse_utils", "FlexibleArgumentParser"), ("vllm.utils", "FlexibleArgumentParser")
    )
    make = _first(
        ("vllm.entrypoints.launchers.cli_args", "make_arg_parser"),
        ("vllm.entrypoints.openai.cli_args", "make_arg_parser"),
        ("vllm.entrypoints.common.cli_args", "make_arg_parser"),
    )
    parser = make(flexible())
    if not any(action.dest == "model_tag" for action in parser._actions):
        parser.add_argument("model_tag", nargs="?")
    args = parser.parse_args(argv)
    return {key: value for key, value in vars(args).items() if _plain(value)}


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def request_model(path: str, body: dict[str, Any]) -> Any:
    openai = "vllm.entrypoints.openai.protocol"
    tokenize, pooling = "vllm.entrypoints.serve.tokenize.protocol", "vllm.entrypoints.pooling"
    chat = "messages" in body
    names = {
        "/v1/completions": ("vllm.entrypoints.openai.completion.protocol", "CompletionRequest"),
        "/tokenize": (tokenize, "TokenizeChatRequest" if chat else "TokenizeCompletionRequest"),
        "/detokenize": (tokenize, "DetokenizeRequest"),
        "/pooling": (f"{pooling}.pooling.protocol", "PoolingChatRequest"),
        "/classify": (f"{pooling}.classify.protocol", "ClassificationChatRequest"),
        "/v1/embeddings": (f"{pooling}.embed.protocol", "EmbeddingCompletionRequest"),
    }
    module, name = names[path]
    return _first((module, name), (openai, name))


def validate(path: str, body: dict[str, Any]) -> dict[str, Any]:
    model = request_model(path, body)
    try:
        model.model_validate(body)
        error = None
    except Exception as exc:
        error = str(exc)
    known: set[str] = set()
    for field_name, info in model.model_fields.items():
        known |= {field_name, info.alias} if info.alias else {field_name}
    return {"path": path, "error": error, "unknown": sorted(set(body) - known)}


def main() -> None:
    asked = json.load(sys.stdin)
    if "argv" in asked:
        print(json.dumps({"args": parse(asked["argv"])}))
    else:
        print(json.dumps({"results": [validate(path, body) for path, body in asked["requests"]]}))


if __name__ == "__main__":
    main()
