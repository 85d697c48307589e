"""`rsdchat train-prm`: a process reward model trained for your draft, from your questions.

Three stages, each resumable, all in one output folder:

1. label: the draft answers each question; its steps are labelled (`rsdchat.prm.labels`) by
   its final answer (`--label-by answer`) or by what the target can still do after them
   (`--label-by target`), one JSON line per question in labels.jsonl;
2. read: the draft reads each labelled step followed by the step tag; its hidden state there
   is the head's input (exactly what the `draft-prm` reward reads while RSD runs), in process
   (llama.cpp) or, for a draft on a server, where its backend reads states (`ServesStates`:
   the openai backend's `draft_states_url`, vLLM serving the draft as an embedding model);
3. train: the head is fitted (`rsdchat.prm.train`) and written as head.safetensors, with
   report.json; with `--backbone`, also a Qwen2ForProcessRewardModel checkpoint that vLLM
   serves for the `qwen-prm` reward (`rsdchat.prm.checkpoint`).
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rsdchat.cli import running
from rsdchat.cli.evaluate import DEFAULT_DATASET, _problems
from rsdchat.cli.options import Given, with_settings
from rsdchat.core.errors import ConfigError, RsdchatError
from rsdchat.core.policy import Mode
from rsdchat.core.protocols import ReadsStates, ServesStates, StepGenerator
from rsdchat.core.types import Context, Message, Role
from rsdchat.evaluation.data import Problem
from rsdchat.files import write_atomic
from rsdchat.in_force import in_force
from rsdchat.prompts import MATH_SYSTEM_PROMPT
from rsdchat.runtime import Runtime, open_runtime
from rsdchat.settings import Settings
from rsdchat.threads import in_thread


class LabelBy(str, Enum):
    answer = "answer"
    target = "target"


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
        console=console,
    )


async def label_all(
    runtime: Runtime, problems: list[Problem], path: Path, procedure: str, err: Console
) -> None:
    from rsdchat.prm import labels

    settings = runtime.settings
    draft = in_force(settings.replace(mode=Mode.DRAFT_ONLY), None).policy
    target = None
    if procedure == labels.TARGET:
        target = in_force(settings.replace(mode=Mode.TARGET_ONLY), None).policy
    todo = labels.todo(problems, path)
    with _bar(err) as bar:
        tally = labels.counts(labels.read_labels(path))
        task = bar.add_task("label", total=len(problems), completed=len(problems) - len(todo), note="")
        for problem in todo:
            record = await labels.label(
                problem,
                runtime.engine,
                draft,
                target,
                MATH_SYSTEM_PROMPT,
                seed=settings.seed,
                procedure=procedure,
            )
            labels.append(path, record)
            for kind, n in labels.counts([record]).items():
                tally[kind] += n
            bar.update(task, advance=1, note=f"{tally['good']} good, {tally['bad']} bad steps")


async def read_all(
    model: ReadsStates, records: list[dict[str, Any]], err: Console
) -> tuple[Any, Any, list[str]]:
    """The draft's hidden state at each labelled step (good = 1), and the question of each."""
    import numpy as np

    from rsdchat.prm.head import STEP_TAG_ID

    states, good, groups = [], [], []
    with _bar(err) as bar:
        task = bar.add_task("read", total=len(records), note="")
        for record in records:
            system = record.get("system", MATH_SYSTEM_PROMPT)
            messages = (Message("system", system), Message("user", record["question"]))
            response = ""
            for step, verdict in zip(record["draft"]["steps"], record["labels"], strict=True):
                response += step["text"]
                if verdict is not None:
                    state, _ = await model.tag_state(Context(messages, response), STEP_TAG_ID)
                    states.append(np.asarray(state, dtype=np.float32))
                    good.append(1.0 if verdict == "good" else 0.0)
                    groups.append(record["id"])
            bar.update(task, advance=1, note=f"{len(good)} steps")
    if not states:
        raise ConfigError("no labelled steps: the draft and the target both failed every question")
    return np.vstack(states), np.array(good), groups


async def states_reader(runtime: Runtime, draft: StepGenerator) -> ReadsStates:
    """Where the draft's hidden states are read: the draft itself (in process), else the server
    its backend reads them on (the openai backend's `draft_states_url`); ConfigError if neither."""
    if isinstance(draft, ReadsStates):
        return draft
    backend = runtime.backends.get(runtime.settings.backend_for(Role.DRAFT))
    if not isinstance(backend, ServesStates):
        raise ConfigError(
            "train-prm reads the draft's hidden states: run the draft on the llamacpp backend, or serve "
            "it with vLLM as an embedding model and give --draft-states-url (the openai backend; "
            f"this draft runs on {draft.info.backend})"
        )
    return await in_thread(backend.states, runtime.settings.draft)


async def train_prm(
    settings: Settings,
    problems: list[Problem],
    source: str,
    out: Path,
    labels_path: Path,
    procedure: str,
    backbone: Path | None,
    err: Console,
) -> dict[str, Any]:
    from rsdchat.prm import labels
    from rsdchat.prm.head import STEP_TAG, STEP_TAG_ID
    from rsdchat.prm.train import train_head

    mode = Mode.RSD if procedure == labels.TARGET else Mode.DRAFT_ONLY  # labels by the answer: no target
    runtime = await open_runtime(settings, mode, with_reward=False)
    try:
        draft = runtime.engine.draft
        assert draft is not None
        reader = await states_reader(runtime, draft)
        try:  # before hours of labelling: can this draft read the step tag at all?
            await reader.tag_state(Context((Message("user", "1 + 1?"),)), STEP_TAG_ID)
        except RsdchatError as exc:
            raise ConfigError(
                f"train-prm: the draft {draft.info.name} cannot read the step tag: {exc}"
            ) from None
        started = time.perf_counter()
        await label_all(runtime, problems, labels_path, procedure, err)
        wanted = {p.id for p in problems}
        records = [r for r in labels.read_labels(labels_path) if r["id"] in wanted]
        states, good, groups = await read_all(reader, records, err)
        about = {
            "model": draft.info.name,
            "n_params": draft.info.n_params,
            "hidden_size": int(states.shape[1]),
            "step_tag": STEP_TAG,
            "reads": "the draft's own conversation, then the step tag (the last hidden state there)",
            "trained_on": source,
            "labels": procedure,
            "command": " ".join(["rsdchat", "train-prm", *sys.argv[2:]]),
        }
        try:
            trained = train_head(states, good, groups, about)
        except ValueError as exc:  # one kind of label only: nothing to learn from
            raise ConfigError(f"train-prm: {exc}") from None
        head_path = out / "head.safetensors"
        trained.head.save(head_path)
        report = {
            "head": str(head_path),
            "questions": len(set(groups)),
            "steps": len(good),
            "bad_steps": int((good == 0).sum()),
            "auc_out_of_fold": trained.cv_auc,
            "auc_by_penalty": {str(k): v for k, v in trained.penalties.items()},
            "default_delta": trained.head.about["default_delta"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        if backbone is not None:
            from rsdchat.prm.checkpoint import write_checkpoint

            report["checkpoint"] = str(write_checkpoint(backbone, trained.head, out / "checkpoint"))
        write_atomic(out / "report.json", json.dumps(report, indent=1) + "\n", replace=True)
        return report
    finally:
        await runtime.aclose()


OURS = ("labels.jsonl", "head.safetensors", "report.json", "checkpoint")


def procedure_for(labels_path: Path, label_by: LabelBy | None) -> str:
    """How the steps are labelled: `--label-by`, else as the labels file already was, else by the
    answer; a file labelled the other way (or both) is refused, never mixed."""
    from rsdchat.prm import labels

    try:
        found = labels.procedure_of(labels.read_labels(labels_path))
    except ValueError as exc:
        raise ConfigError(f"--labels {labels_path}: {exc}") from None
    wanted = labels.PROCEDURES[label_by.value] if label_by else found or labels.ANSWER
    if found is not None and found != wanted:
        named = {v: k for k, v in labels.PROCEDURES.items()}.get(found, found)
        raise ConfigError(
            f"--labels {labels_path} was labelled by the {named} ({found}): give --label-by {named} "
            "or another --labels file"
        )
    return wanted


def check_out(out: Path, labels_path: Path) -> None:
    """Refuse an output folder or labels file that holds what train-prm did not write (never overwritten)."""
    from rsdchat.prm.head import PrmHead

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OURS and not p.name.startswith("."))
        if foreign:
            raise ConfigError(
                f"--out {out} holds files train-prm did not write ({foreign[0]}…): "
                "choose an empty or new folder"
            )
        if (out / "head.safetensors").exists():
            PrmHead.load(out / "head.safetensors")  # a ConfigError unless it is a head rsdchat wrote
    if labels_path.is_file() and labels_path.stat().st_size:
        with labels_path.open(encoding="utf-8", errors="replace") as file:
            first = file.readline()
        try:
            record = json.loads(first)
        except ValueError:
            record = None
        ours = isinstance(record, dict) and "labels" in record
        if not ours:
            raise ConfigError(
                f"--labels {labels_path} is not a labels file train-prm wrote; it was left as it is"
            )


def train_prm_command(
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help="A packaged benchmark with answers.",
            show_default=f"{DEFAULT_DATASET}-train",
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Your own questions: JSONL or CSV with answers.")
    ] = None,
    offset: Annotated[int, typer.Option(help="First question (0-based).")] = 0,
    limit: Annotated[int, typer.Option(help="How many questions (0: all to the end).")] = 100,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for labels, head, report (and checkpoint).")
    ] = Path("rsdchat-prm"),
    labels_file: Annotated[
        Path | None,
        typer.Option("--labels", help="The labels file to use and extend.", show_default="OUT/labels.jsonl"),
    ] = None,
    label_by: Annotated[
        LabelBy | None,
        typer.Option(
            "--label-by",
            help="answer: each step takes the verdict of the draft's final answer (only the draft runs); "
            "target: the target finishes from each step to find the first one it cannot recover from.",
            show_default="the labels file's, else answer",
        ),
    ] = None,
    backbone: Annotated[
        Path | None,
        typer.Option(help="The draft's Hugging Face folder: also write a checkpoint vLLM serves."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
    *,
    _settings_given: Given,
) -> None:
    """Train a process reward model for your draft: label its steps, fit a head, write it.

    The draft answers each question; its steps are labelled by its final answer (right: good,
    wrong: bad), or with --label-by target by what the target can still do after each. A head is
    fitted on the draft's hidden states at each step and written to OUT/head.safetensors, which
    the draft-prm reward reads (--prm-head).

    Stopped at any point, the same command resumes.

    [dim]Examples:[/dim]

      rsdchat train-prm -d gsm8k-train --limit 200 -o my-prm

      rsdchat train-prm -f questions.jsonl -o my-prm --backbone ~/models/my-draft

    A draft on a vLLM server: serve it a second time as an embedding model (vllm serve DRAFT
    --runner pooling --convert embed) and give that server's --draft-states-url.
    """
    err = Console(stderr=True)
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise ConfigError("train-prm needs numpy: pip install 'rsdchat[train]'") from None
    settings = _settings_given.settings()
    name = dataset or f"{DEFAULT_DATASET}-train"
    source, problems = _problems(name, file, offset, limit, None, False, (None, None), err)
    labels_path = labels_file or out / "labels.jsonl"
    check_out(out, labels_path)
    procedure = procedure_for(labels_path, label_by)
    out.mkdir(parents=True, exist_ok=True)
    report = running.run(
        train_prm(
            settings,
            problems,
            f"{source} {offset}–{offset + len(problems) - 1}",
            out,
            labels_path,
            procedure,
            backbone,
            err,
        ),
        interrupted="stopped: the labels so far are kept; run the same command to resume",
    )
    if as_json:
        print(json.dumps(report))
        return
    out_console = Console()
    out_console.print(
        f"head: {report['head']}  ({report['steps']} steps from {report['questions']} questions, "
        f"{report['bad_steps']} bad)\nAUC out of fold: {report['auc_out_of_fold']:.3f}   "
        f"default δ: {report['default_delta']:.3g}",
        highlight=False,
    )
    if "checkpoint" in report:
        out_console.print(f"checkpoint: {report['checkpoint']}  (vllm serve it with --runner pooling)")
    out_console.print(f"use it: rsdchat --reward draft-prm --prm-head {report['head']}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train-prm")(with_settings(train_prm_command))
