"""The documentation says what the code does: its commands, its JSON, its paths and links.

Fast and model-free. Each checker takes the text of a Markdown file and returns what is wrong
with it, one line per problem; the tests run every checker on README.md, docs/*.md and
benchmarks/NOTEBOOK.md, and feed each one a bad example to show that it can fail.

- commands: every `rsdchat …` line in a fenced code block (and every inline `rsdchat …` span)
  names a real command and real options (the Typer app's own, backend plugins' generated ones
  included) and no more arguments than the command takes;
- JSON: every example of `rsdchat solve --json` output has exactly the keys the code writes, at
  every level (the real object comes from the real command, run on scripted models);
- paths: every repo path in backticks (`rsdchat/…`, `backends/…`, `benchmarks/…`, `scripts/…`,
  `docs/…`, `tests/…`) and in a fenced code block exists (a glob matches something);
- links: every relative Markdown link resolves to a file, and its `#anchor` to a heading there;
- names: every dotted `rsdchat.…` name in backticks can be imported (module, then attributes);
- the plugin skeleton in docs/backends.md imports only `rsdchat.plugin_api`, matches its entry
  points, and answers a question through the real engine.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "NOTEBOOK.md"]
IDS = [str(path.relative_to(ROOT)) for path in DOCS]

# --- Markdown ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its info string (`bash`, `json`, ``) and its lines."""

    lang: str
    line: int  # 1-based line of its first content line
    text: str


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def blocks(markdown: str) -> list[Block]:
    found, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        marker, start, body = opening.group(2), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(marker):
            body.append(lines[i])
            i += 1
        found.append(Block(opening.group(3).lower(), start + 1, "\n".join(body)))
        i += 1
    return found


def prose(markdown: str) -> str:
    """The text outside fenced code blocks (line count kept: block lines become empty)."""
    kept, inside = [], None
    for line in markdown.splitlines():
        opening = FENCE.match(line)
        if inside is None and opening is not None:
            inside = opening.group(2)
            kept.append("")
        elif inside is not None:
            if line.strip().startswith(inside):
                inside = None
            kept.append("")
        else:
            kept.append(line)
    return "\n".join(kept)


def code_spans(markdown: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every inline `code` span outside fenced blocks."""
    text = prose(markdown)
    for match in re.finditer(r"(`+)(.+?)\1", text, flags=re.DOTALL):
        yield text.count("\n", 0, match.start()) + 1, match.group(2).strip()


# --- (a) commands -----------------------------------------------------------------------------


@cache
def cli() -> Any:
    """The click command behind the Typer app (typer vendors click: it is read by its attributes)."""
    from rsdchat.cli import app

    group = typer.main.get_command(app)
    assert group.commands, "the app has commands"  # type: ignore[attr-defined]
    return group


HELP = ("-h", "--help")
SHELL_BREAKS = {"|", "||", "&&", ";", "&", "(", ")"}
REDIRECTS = {">", ">>", "<", "2>", "&>"}


def _options(command: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for param in command.params:
        if param.param_type_name == "option":
            for name in (*param.opts, *param.secondary_opts):
                found[name] = param
    return found


def _takes_value(option: Any) -> bool:
    return not option.is_flag and not option.count


def _read_options(
    command: Any, args: list[str], i: int, where: str, problems: list[str]
) -> tuple[int, list[str]]:
    """Read `args` from `i` as `command`'s options and arguments; return where it stopped and the
    positional arguments seen (a command group stops at its first positional: the subcommand)."""
    options, positionals = _options(command), []
    while i < len(args):
        token = args[i]
        if token == "--":
            positionals.extend(args[i + 1 :])
            return len(args), positionals
        if token.startswith("-") and token != "-":
            name, _, value = token.partition("=")
            if name in HELP:
                i += 1
                continue
            option = options.get(name)
            if option is None:
                problems.append(f"{where}: no option {name}")
                i += 1 if value or i + 1 == len(args) or args[i + 1].startswith("-") else 2
                continue
            i += 2 if _takes_value(option) and not value else 1
            continue
        if hasattr(command, "commands"):  # a group: its first positional is the subcommand
            return i, positionals
        positionals.append(token)
        i += 1
    return i, positionals


def check_command(args: list[str]) -> list[str]:
    """What is wrong with `rsdchat ARGS` (args without the program name)."""
    problems: list[str] = []
    group = cli()
    i, _ = _read_options(group, args, 0, "rsdchat", problems)
    if i >= len(args):
        return problems
    name = args[i]
    command = group.commands.get(name)
    if command is None:
        return [*problems, f"no command {name!r} (there are: {', '.join(sorted(group.commands))})"]
    _, positionals = _read_options(command, args, i + 1, f"rsdchat {name}", problems)
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    positionals = [p for p in positionals if p != "…"] or positionals[:1]  # … alone: more elided
    if not any(p.nargs == -1 for p in arguments) and len(positionals) > sum(p.nargs for p in arguments):
        problems.append(f"rsdchat {name}: takes {len(arguments)} argument(s), given {positionals}")
    return problems


def _is_rsdchat(token: str) -> bool:
    return token == "rsdchat" or token.endswith("/rsdchat")


def rsdchat_commands(code: str) -> Iterator[tuple[int, str, list[str]]]:
    """(line, the line, the arguments) of each `rsdchat` command in a block of shell (or of a
    terminal shown with `$ ` prompts); a line that is not shell is skipped unless it names rsdchat."""
    lines = code.splitlines()
    number = 0
    while number < len(lines):
        first, line = number, lines[number]
        while line.endswith("\\") and number + 1 < len(lines):  # continuation lines
            number += 1
            line = line[:-1] + " " + lines[number]
        number += 1
        shown = line.strip().removeprefix("$ ")
        if not re.search(r"(^|[\s/|;&(])rsdchat(\s|$)", shown):
            continue
        try:
            lexer = shlex.shlex(shown, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            yield first + 1, shown, [f"<cannot be read as shell: {exc}>"]
            continue
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token in SHELL_BREAKS:
                while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[0]):
                    segment.pop(0)  # VAR=value rsdchat …
                if segment and _is_rsdchat(segment[0]):
                    yield first + 1, shown, segment[1:]
                segment = []
            else:
                segment.append(token)


def _without_redirections(args: list[str]) -> list[str]:
    """`args` without `> FILE` and the like: a redirection's target is not an argument."""
    kept, skip = [], False
    for token in args:
        if skip:
            skip = False
        elif token in REDIRECTS:
            skip = True
        else:
            kept.append(token)
    return kept


def command_problems(markdown: str) -> list[str]:
    """Commands in fenced blocks of shell or terminal text, and inline spans that start `rsdchat `."""
    problems = []
    for block in blocks(markdown):
        if block.lang not in ("", "bash", "sh", "shell", "console", "text"):
            continue
        for line, shown, args in rsdchat_commands(block.text):
            for problem in check_command(_without_redirections(args)):
                problems.append(f"line {block.line + line - 1}: {shown!r}: {problem}")
    for line, span in code_spans(markdown):
        if re.match(r"(\S*/)?rsdchat\s", span):
            for _, shown, args in rsdchat_commands(span):
                problems.extend(f"line {line}: {shown!r}: {p}" for p in check_command(args))
    return problems


# --- (b) solve --json -------------------------------------------------------------------------


def shape(values: list[Any]) -> Any:
    """One value with every key that any of `values` has, nulls filled in from the others where
    they have an object: the real steps (a judged draft's `decision`, a target step's null) as one."""
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, dict) for value in present):
        keys = dict.fromkeys(key for value in present for key in value)
        return {key: shape([value[key] for value in present if key in value]) for key in keys}
    if present and all(isinstance(value, list) for value in present):
        return [shape([item for value in present for item in value])]
    return present[0] if present else None


def key_differences(doc: Any, real: Any, path: str = "$") -> list[str]:
    """Where the keys of `doc` differ from those of `real`, at every level.

    Each item of a list in `doc` is compared with the shape of all the real list's items; a
    null on either side is not compared (a target step's `decision` is null).
    """
    if isinstance(doc, dict) and isinstance(real, dict):
        found = []
        if doc.keys() - real.keys():
            found.append(f"{path}: keys the code does not write: {sorted(doc.keys() - real.keys())}")
        if real.keys() - doc.keys():
            found.append(f"{path}: keys the code writes, missing: {sorted(real.keys() - doc.keys())}")
        for key in sorted(doc.keys() & real.keys()):
            found.extend(key_differences(doc[key], real[key], f"{path}.{key}"))
        return found
    if isinstance(doc, list) and isinstance(real, list) and real:
        every = shape(real)
        return [
            diff
            for index, item in enumerate(doc)
            for diff in key_differences(item, every, f"{path}[{index}]")
        ]
    return []


def solve_json_examples(markdown: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each fenced JSON example of `rsdchat solve --json` output."""
    for block in blocks(markdown):
        solve_like = '"steps"' in block.text and '"finish_reason"' in block.text
        openai_shaped = '"chat.completion' in block.text or '"text_completion"' in block.text  # serve's
        if block.lang in ("json", "jsonl") and solve_like and not openai_shaped:
            yield block.line, block.text


def serve_json_problems(markdown: str, real: dict[str, Any]) -> list[str]:
    """Each fenced JSON reply of `rsdchat serve` (a chat.completion) against the keys the server writes."""
    problems = []
    for block in blocks(markdown):
        if block.lang != "json" or '"object": "chat.completion"' not in block.text:
            continue
        try:
            doc = json.loads(block.text)
        except json.JSONDecodeError as exc:
            problems.append(f"line {block.line}: the serve reply example is not JSON: {exc}")
            continue
        problems.extend(f"line {block.line}: {diff}" for diff in key_differences(doc, real))
    return problems


@cache
def real_serve_reply() -> dict[str, Any]:
    """What `rsdchat serve` answers a non-streamed chat request, made by its own code on scripted models."""
    import asyncio

    from rsdchat.core.engine import Engine
    from rsdchat.core.types import Message
    from rsdchat.in_force import in_force
    from rsdchat.serve.replies import Replies
    from rsdchat.settings import Settings
    from rsdchat.testing import ScriptedModel, ScriptedReward

    engine = Engine(draft=ScriptedModel(DRAFT, name="tiny-draft"), target=ScriptedModel(TARGET))
    reward = ScriptedReward(lambda context, step: 0.2 if "numbers" in step.text else 0.9)
    policy = in_force(Settings(), reward).policy
    trace = asyncio.run(engine.solve([Message("user", "What is 2+3?")], policy))
    tokens = sum(step.tokens for step in trace.answer_steps)
    return Replies("x", "rsd", chat=True).whole(trace.text, "stop", trace, policy, tokens)


def json_problems(markdown: str, real: dict[str, Any], with_reference: dict[str, Any]) -> list[str]:
    problems = []
    for line, text in solve_json_examples(markdown):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"line {line}: the solve --json example is not JSON: {exc}")
            continue
        shape = with_reference if isinstance(doc, dict) and "reference" in doc else real
        problems.extend(f"line {line}: {diff}" for diff in key_differences(doc, shape))
    return problems


DRAFT = ["2 and 3 are the numbers.\n\n", "2 + 3 = 5\n\n", "So the answer is \\boxed{5}."]
TARGET = ["We add 2 and 3.\n\n", "2 + 3 = 5\n\n", "So the answer is \\boxed{5}."]


@cache
def real_solve_json() -> tuple[dict[str, Any], dict[str, Any]]:
    """What `rsdchat solve --json` writes, run through the real command on scripted models:
    (a question given on the command line, a question from --file with its answer)."""
    import tempfile

    import rsdchat.cli.solve
    from rsdchat.cli import app
    from rsdchat.core.engine import Engine
    from rsdchat.runtime import Runtime
    from rsdchat.settings import Settings
    from rsdchat.testing import ScriptedModel, ScriptedReward

    async def scripted(settings: Settings, *args: Any, **kwargs: Any) -> Runtime:  # the 1st draft is rejected
        engine = Engine(draft=ScriptedModel(DRAFT, name="tiny-draft"), target=ScriptedModel(TARGET))
        reward = ScriptedReward(lambda context, step: 0.2 if "numbers" in step.text else 0.9)
        return Runtime(settings, engine, {}, reward)

    with tempfile.TemporaryDirectory() as home, pytest.MonkeyPatch.context() as patch:
        patch.setattr(rsdchat.cli.solve, "open_runtime", scripted)
        patch.setenv("XDG_CONFIG_HOME", home)
        patch.delenv("RSDCHAT_CONFIG", raising=False)
        questions = Path(home) / "q.jsonl"
        questions.write_text('{"id": "q1", "question": "What is 2+3?", "answer": "5"}\n', encoding="utf-8")
        found = []
        for args in (["What is 2+3?"], ["--file", str(questions)]):
            result = CliRunner().invoke(app, ["solve", "--json", *args])
            assert result.exit_code == 0, result.output
            found.append(json.loads(result.stdout))
    return found[0], found[1]


# --- (c) paths, links and names ---------------------------------------------------------------

REPO_PATH = re.compile(r"(?:rsdchat|backends|benchmarks|scripts|docs|tests)/[\w.*/-]*")
IN_CODE = re.compile(r"(?<![\w./~$-])((?:rsdchat|backends|benchmarks|scripts|docs|tests)/[\w.*/-]*)")


def _exists(path: str) -> bool:
    if any(c in path for c in "*?["):
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


def path_problems(markdown: str) -> list[str]:
    problems = []
    for line, span in code_spans(markdown):
        if REPO_PATH.fullmatch(span) and not _exists(span):
            problems.append(f"line {line}: `{span}` does not exist")
    for block in blocks(markdown):
        for match in IN_CODE.finditer(block.text):
            if not _exists(match.group(1).rstrip(".")):
                line = block.line + block.text.count("\n", 0, match.start())
                problems.append(f"line {line}: {match.group(1)} (in a code block) does not exist")
    return problems


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    for line in prose(markdown).splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def link_problems(markdown: str, where: Path) -> list[str]:
    """Relative links of `markdown`, read as the file `where`: their files, and their #anchors."""
    problems = []
    text = prose(markdown)
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        line = text.count("\n", 0, match.start()) + 1
        file, _, anchor = target.partition("#")
        path = (where.parent / file).resolve()
        if file and not path.exists():
            problems.append(f"line {line}: link {target} does not resolve ({path} is missing)")
            continue
        if not anchor or (file and path.suffix != ".md"):
            continue
        headings = anchors(path.read_text(encoding="utf-8") if file else markdown)
        if anchor not in headings:
            problems.append(f"line {line}: link {target}: no heading #{anchor} in {file or where.name}")
    return problems


def _importable(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def name_problems(markdown: str) -> list[str]:
    from rsdchat.plugins import BACKENDS, REWARDS

    problems = []
    for line, span in code_spans(markdown):
        name = re.fullmatch(r"(rsdchat(?:\.\w+)+)(?:\(.*\))?", span)
        if name and span not in (BACKENDS, REWARDS) and not _importable(name.group(1)):
            problems.append(f"line {line}: `{span}`: no such module or name")
    return problems


# --- the docs ---------------------------------------------------------------------------------


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_rsdchat_command_line_is_real(doc: Path) -> None:
    assert not command_problems(read(doc))


def test_the_docs_show_commands_to_check() -> None:
    found = sum(len(list(rsdchat_commands(b.text))) for doc in DOCS for b in blocks(read(doc)))
    assert found >= 30


def test_the_solve_json_example_has_the_keys_the_code_writes() -> None:
    real, with_reference = real_solve_json()
    examples = [(doc, list(solve_json_examples(read(doc)))) for doc in DOCS]
    assert sum(len(found) for _, found in examples) >= 1  # the quickstart shows one
    for doc, found in examples:
        if found:
            assert not json_problems(read(doc), real, with_reference), doc.name


def test_the_serve_reply_example_has_the_keys_the_server_writes() -> None:
    real = real_serve_reply()
    assert real["rsd"]["steps"][0]["accepted"] is False  # a rejected draft, so every key shows
    assert "omega" in real["rsd"]["steps"][0] and "roles" in real["usage"]["rsd"]
    doc = read(ROOT / "docs" / "serve.md")
    assert '"object": "chat.completion"' in doc
    assert not serve_json_problems(doc, real)
    broken = doc.replace('"omega": 0.0,', "", 1)
    assert any("missing: ['omega']" in problem for problem in serve_json_problems(broken, real))


def test_the_real_solve_json_is_what_the_examples_are_compared_with() -> None:
    real, with_reference = real_solve_json()
    assert {"id", "answer", "steps", "cost", "settings"} <= real.keys()
    assert with_reference.keys() - real.keys() == {"reference", "correct"}
    decisions = [step["decision"] for step in real["steps"]]
    assert None in decisions and any(isinstance(d, dict) for d in decisions)  # a rejected draft


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_repo_path_named_exists(doc: Path) -> None:
    assert not path_problems(read(doc))


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_relative_link_resolves(doc: Path) -> None:
    assert not link_problems(read(doc), doc)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_rsdchat_name_can_be_imported(doc: Path) -> None:
    assert not name_problems(read(doc))


def test_every_path_in_the_architecture_map_exists() -> None:
    text = read(ROOT / "docs" / "architecture.md")
    named = [span for _, span in code_spans(text) if REPO_PATH.fullmatch(span)]
    assert len(named) >= 20  # the map names the code it describes
    assert not path_problems(text)


def plugin_skeleton() -> tuple[str, str]:
    """The Python and the TOML of docs/backends.md's "Writing a backend plugin"."""
    text = read(ROOT / "docs" / "backends.md")
    found = blocks(text[text.index("## Writing a backend plugin") :])
    python = next(block.text for block in found if block.lang == "python")
    toml = next(block.text for block in found if block.lang == "toml")
    return python, toml


async def test_the_plugin_skeleton_in_backends_md_works() -> None:
    from rsdchat.core.engine import Engine
    from rsdchat.core.policy import Policy
    from rsdchat.core.weighting import BinaryStep
    from rsdchat.plugin_api import (
        BackendPlugin,
        Message,
        PluginConfig,
        RewardContext,
        RewardPlugin,
        RewardSource,
        Role,
        StepGenerator,
    )
    from rsdchat.plugins import BACKENDS, REWARDS

    python, toml = plugin_skeleton()
    imported = set()
    for node in ast.walk(ast.parse(python)):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert {name for name in imported if name.startswith("rsdchat")} == {"rsdchat.plugin_api"}

    module = types.ModuleType("rsdchat_echo_from_the_docs")
    sys.modules[module.__name__] = module  # pydantic resolves the settings model's annotations here
    try:
        exec(compile(python, "docs/backends.md", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    groups = tomllib.loads(toml)["project"]["entry-points"]
    assert set(groups) == {BACKENDS, REWARDS}
    for group, entries in groups.items():
        for name, target in entries.items():
            registered = getattr(module, target.partition(":")[2])
            assert isinstance(registered, BackendPlugin if group == BACKENDS else RewardPlugin)
            assert registered.name == name

    plugin = module.PLUGIN
    assert issubclass(plugin.config, PluginConfig)
    backend = plugin.create(plugin.config())
    draft, target = backend.generator(Role.DRAFT, "echo-draft"), backend.generator(Role.TARGET, "echo-target")
    assert isinstance(draft, StepGenerator) and isinstance(target, StepGenerator)
    reward = module.AGREES.create(RewardContext(draft, target, {}))
    assert isinstance(reward, RewardSource)
    policy = Policy(reward=reward, weighting=BinaryStep(reward.default_delta))
    trace = await Engine(draft=draft, target=target).solve([Message("user", "What is 2+3?")], policy)
    assert trace.error is None and trace.final_answer == "5"
    assert [(step.author, step.accepted) for step in trace.steps] == [(Role.DRAFT, True)] * 3
    await backend.aclose()


# --- each checker fails on a bad example -------------------------------------------------------


def test_the_command_checker_flags_unknown_commands_options_and_arguments() -> None:
    good = '```bash\nrsdchat --delta 0.9 solve "…" --draft-url http://x:1 --json > out.jsonl\n```\n'
    assert command_problems(good) == []
    bad = (
        "```bash\n"
        'echo "7 * 8?" | rsdchat solve --jsn\n'
        "rsdchat sovle 'What is 2+3?'\n"
        "rsdchat eval -d gsm8k \\\n  --limit 5 --no-such-setting 3\n"
        'RSDCHAT_DELTA=0.9 .venv/bin/rsdchat solve "one" "two"\n'
        "```\n"
        "Then `rsdchat doctor --jsn` checks it.\n"
    )
    problems = command_problems(bad)
    assert len(problems) == 5, problems
    assert "no option --jsn" in problems[0] and "line 2" in problems[0]
    assert "no command 'sovle'" in problems[1]
    assert "no option --no-such-setting" in problems[2] and "line 4" in problems[2]
    assert "takes 1 argument(s)" in problems[3]
    assert "line 8" in problems[4] and "rsdchat doctor: no option --jsn" in problems[4]


def test_the_json_checker_flags_missing_and_extra_keys() -> None:
    real, with_reference = real_solve_json()
    doc = json.loads(json.dumps(real))
    example = "```json\n" + json.dumps(doc, indent=1) + "\n```\n"
    assert json_problems(example, real, with_reference) == []
    doc["reward"] = doc["steps"][0]["decision"]["reward"]  # the old shape: reward at the top level
    del doc["steps"][0]["decision"]["omega"]
    del doc["cost"]["total_flops"]
    problems = json_problems("```json\n" + json.dumps(doc) + "\n```\n", real, with_reference)
    assert any("$: keys the code does not write: ['reward']" in p for p in problems), problems
    assert any("$.steps[0].decision: keys the code writes, missing: ['omega']" in p for p in problems)
    assert any("$.cost: keys the code writes, missing: ['total_flops']" in p for p in problems)
    elided = '```json\n{"steps": [], "finish_reason": "answer", …}\n```\n'
    assert "is not JSON" in json_problems(elided, real, with_reference)[0]


def test_the_path_checker_flags_missing_paths() -> None:
    good = "The loop is `rsdchat/core/engine.py`; results in `benchmarks/results/gsm8k-20-*.txt`.\n"
    assert path_problems(good) == []
    bad = (
        "The loop is in `rsdchat/engine.py` (it moved).\n\n"
        "```bash\n.venv/bin/python benchmarks/no_such_script.py --limit 3\n```\n"
    )
    problems = path_problems(bad)
    assert len(problems) == 2, problems
    assert "line 1: `rsdchat/engine.py` does not exist" in problems[0]
    assert "benchmarks/no_such_script.py" in problems[1] and "line 4" in problems[1]


def test_the_link_checker_flags_missing_files_and_headings() -> None:
    where = ROOT / "docs" / "x.md"
    good = "# A map\n\nSee [the results](results.md), [δ](how-rsd-works.md#tuning-δ), [this](#a-map).\n"
    assert link_problems(good, where) == []
    bad = "See [gone](notebook.md), [none](rewards.md#no-such-heading), [here](#nor-here).\n\n![](img/x.png)"
    problems = link_problems(bad, where)
    assert len(problems) == 4, problems
    assert "no heading #no-such-heading in rewards.md" in problems[1] and "line 3" in problems[3]


def test_the_name_checker_flags_names_that_do_not_import() -> None:
    assert name_problems("`rsdchat.core.engine.Engine` and `rsdchat.progress.PROGRESS.info(line)`") == []
    problems = name_problems("`rsdchat.engine.Engine` and `rsdchat.core.engine.Motor`")
    assert len(problems) == 2, problems


def test_the_chat_app_screens_in_tui_md_are_the_snapshots_the_tests_compare() -> None:
    """docs/tui.md shows the app as it is: each screen it shows is a snapshot file, byte for byte."""
    doc = read(ROOT / "docs" / "tui.md")
    screens = [b.text for b in blocks(doc) if b.text.startswith(" ⭘")]
    snapshots = [ROOT / "tests" / "snapshots" / f"tui_math_{size}.txt" for size in ("80x24", "160x48")]
    assert len(screens) == len(snapshots)
    for screen, snapshot in zip(screens, snapshots, strict=True):
        assert screen.rstrip("\n") == snapshot.read_text(encoding="utf-8").rstrip("\n"), snapshot.name
