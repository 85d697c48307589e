"""`rsdchat eval`'s runner with scripted models: methods, the results file, resuming, sweeps, summaries.

(The installed command on a real model: test_cli_eval.py; grading and datasets: test_grading_and_datasets.py.)
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rsdchat.cli.evaluate import expand_sweeps, report
from rsdchat.core.engine import Engine
from rsdchat.core.errors import BackendError, ConfigError
from rsdchat.core.types import Context, Generation, StepRequest
from rsdchat.evaluation.data import Problem
from rsdchat.evaluation.grading import extract_choice, grade
from rsdchat.evaluation.methods import parse_method, parse_methods
from rsdchat.evaluation.results import ResultsFile, first_difference, read_results
from rsdchat.evaluation.runner import RunTools, fingerprint, run_methods
from rsdchat.evaluation.summary import SweepTime, mcnemar, speed_line, summarise, sweep_time, wilson
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel

# The draft gets 2+2 right and 3+3 wrong (its arithmetic says so); the target gets both right.
# Each then concludes with the number its reply so far arrived at.
DRAFT = {"2+2": "2 + 2 = 4.\n\n", "3+3": "3 + 3 = 7.\n\n"}
TARGET = {"2+2": "2 + 2 = 4.\n\n", "3+3": "3 + 3 = 6.\n\n"}
PROBLEMS = [Problem("a", "What is 2+2?", "4"), Problem("b", "What is 3+3?", "6")]


def script(first: dict[str, str]) -> Any:
    def next_step(context: Context, request: StepRequest) -> str:
        done = context.response.count("\n\n")
        if done == 0:
            return first["2+2" if "2+2" in context.question else "3+3"]
        if done == 1:
            return f"So \\boxed{{{context.response.split('= ')[1].split('.')[0]}}}.\n\n"
        return ""

    return next_step


def tools(cache: bool = False, **settings: Any) -> tuple[RunTools, Settings, ScriptedModel, ScriptedModel]:
    chosen = Settings(draft="d", target="t", reward="arithmetic", **settings)
    draft, target = (
        ScriptedModel(script(DRAFT), name="d"),
        ScriptedModel(script(TARGET), name="t", n_params=3_000_000),
    )
    return RunTools(Runtime(chosen, Engine(draft=draft, target=target)), cache=cache), chosen, draft, target


async def run(path: Path, methods: str, cache: bool = False, **settings: Any) -> list[dict[str, Any]]:
    run_tools, chosen, _, _ = tools(cache, **settings)
    with ResultsFile(path, fingerprint(chosen, "test")) as results:
        await run_methods(run_tools, chosen, PROBLEMS, parse_methods(methods), results, lambda *a: None)
        return results.records


# -- methods ----------------------------------------------------------------------------------


def test_method_specs_parse_and_bad_ones_say_what_is_valid() -> None:
    spec = parse_method("rsd:delta=0.9:reward=arithmetic")
    assert (spec.name, dict(spec.settings), dict(spec.options)) == (
        "rsd",
        {"delta": "0.9", "reward": "arithmetic"},
        {},
    )
    assert dict(parse_method("bon:n=4").options) == {"n": "4"}
    for bad, message in [
        ("fast", "unknown method 'fast'; choose from: target-only, draft-only, rsd"),
        ("rsd:colour=red", "unknown option 'colour'"),
        ("bon:n", "options are key=value"),
        ("target-only:mode=rsd", "unknown option 'mode'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_method(bad)
    with pytest.raises(ConfigError, match="named twice"):
        parse_methods("rsd,rsd")


def test_a_sweep_expands_the_methods_it_matters_to() -> None:
    specs = expand_sweeps(parse_methods("target-only,rsd,rsd:delta=0.5"), {"delta": [0.7, 0.8]})
    assert [s.text for s in specs] == ["target-only", "rsd:delta=0.7", "rsd:delta=0.8", "rsd:delta=0.5"]
    specs = expand_sweeps(parse_methods("target-only,rsd"), {"max_tokens": [64, 128]})
    assert [s.text for s in specs] == ["target-only:max_tokens=64", "target-only:max_tokens=128",
                                       "rsd:max_tokens=64", "rsd:max_tokens=128"]  # fmt: skip


async def test_every_method_answers_every_question(tmp_path: Path) -> None:
    methods = "target-only,draft-only,rsd:delta=1,random:p=0.5,maj:n=3,bon:n=2,pbon:n=2,beam:n=2"
    records = await run(tmp_path / "r.jsonl", methods)
    by = {(r["method"], r["id"]): r for r in records}
    assert len(by) == 16
    assert (by["target-only", "b"]["correct"], by["draft-only", "b"]["correct"]) == (True, False)
    rsd = by["rsd:delta=1", "b"]  # the wrong sum is vetoed: the target writes that step
    assert (
        rsd["correct"]
        and rsd["target_steps"] == 1
        and rsd["acceptance"] == {"judged": 2, "accepted": 1, "invalid": 0, "decided_by": {"arithmetic": 2}}
    )
    assert [s["author"] for s in rsd["trace"]["steps"]] == ["draft", "target", "draft"]
    assert by["random:p=0.5", "a"]["trace"]["steps"][0]["decision"]["weighting"] == {
        "name": "constant",
        "p": 0.5,
    }
    assert len(by["maj:n=3", "a"]["samples"]) == 3 and by["maj:n=3", "a"]["correct"]
    assert [s["score"] for s in by["bon:n=2", "b"]["samples"]] == [1.0, 1.0]  # no sum in the last step
    for record in records:  # strict JSON, and the cost is measured per role
        json.dumps(record, allow_nan=False)
        assert record["cost"]["total_flops"] > 0 and record["error"] is None


@pytest.mark.parametrize(("concurrency", "interleaved"), [(1, False), (3, True)])
async def test_a_questions_samples_are_in_flight_concurrency_at_a_time(
    tmp_path: Path, concurrency: int, interleaved: bool
) -> None:
    """One at a time, each sample's steps follow each other: a one-sequence model (llama.cpp)
    keeps its context cached instead of re-reading each sample's at every step."""
    run_tools, chosen, draft, _ = tools(concurrency=concurrency)
    draft.delay = 1e-4  # each token awaits: samples in flight together interleave
    with ResultsFile(tmp_path / "r.jsonl", fingerprint(chosen, "test")) as results:
        await run_methods(run_tools, chosen, PROBLEMS[:1], parse_methods("maj:n=3"), results, lambda *a: None)
    steps_done = [call.response.count("\n\n") for call in draft.calls]
    assert steps_done == ([0, 0, 0, 1, 1, 1] if interleaved else [0, 1, 0, 1, 0, 1])


async def test_random_routing_matches_the_target_share_of_rsd(tmp_path: Path) -> None:
    records = await run(tmp_path / "r.jsonl", "rsd:delta=1,random")
    rsd = [r for r in records if r["method"] == "rsd:delta=1"]
    accepted = sum(r["acceptance"]["accepted"] for r in rsd) / sum(r["acceptance"]["judged"] for r in rsd)
    coin = [r for r in records if r["method"] == "random"]
    weights = {s["decision"]["weighting"]["p"] for r in coin for s in r["trace"]["steps"] if s["decision"]}
    assert weights == {accepted} == {0.75}
    with pytest.raises(ConfigError, match="give p=… in \\[0, 1\\], or run an rsd method first"):
        await run(tmp_path / "other.jsonl", "random")


def test_multiple_choice_grading_reads_the_letter() -> None:
    assert extract_choice("so the answer is (C).", 4) == "C" and extract_choice("\\boxed{B}", 4) == "B"
    assert extract_choice("I choose (E)", 4) is None and extract_choice("42", 4) is None
    assert grade("Answer: b", "B", 4) and not grade("\\boxed{A}", "B", 4) and grade("\\boxed{6}", "6")


# -- the results file -----------------------------------------------------------------------


async def test_a_rerun_resumes_and_a_cut_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    await run(path, "target-only,draft-only")
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["type"] == "eval"
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # killed while writing the last line
    calls = tools()
    rerun_tools, chosen, draft, target = calls
    with ResultsFile(path, fingerprint(chosen, "test")) as results:
        assert len(results.records) == 3
        await run_methods(
            rerun_tools, chosen, PROBLEMS, parse_methods("target-only,draft-only"), results, lambda *a: None
        )
    _, records = read_results(path)
    assert sorted((r["method"], r["id"]) for r in records) == [
        ("draft-only", "a"), ("draft-only", "b"), ("target-only", "a"), ("target-only", "b")]  # fmt: skip
    assert len(draft.calls) == 2 and target.calls == []  # only the lost result ran again


async def test_a_file_from_other_settings_is_refused_with_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    await run(path, "target-only")
    with pytest.raises(
        ConfigError, match=r"written with other settings \(settings.max_tokens: 1024 in the file, 64 now\)"
    ):
        await run(path, "target-only", max_tokens=64)
    records = await run(path, "target-only", concurrency=2)  # how fast it runs is not what it writes
    assert len(records) == 2
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 1}}) is None


def test_a_setting_newer_than_the_file_matches_at_its_default() -> None:
    old, defaults = {"settings": {"delta": 0.9}}, {"settings": {"delta": None, "keep_pen": 0}}
    assert first_difference(old, {"settings": {"delta": 0.9, "keep_pen": 0}}, defaults) is None
    assert first_difference(old, {"settings": {"delta": 0.9, "keep_pen": 1}}, defaults) == (
        "settings.keep_pen: None in the file, 1 now"
    )
    assert first_difference(old, {"settings": {"delta": 0.9, "keep_pen": 0}}) is not None  # no defaults given


def test_one_results_file_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, {"x": 1}), pytest.raises(ConfigError, match="in use by another rsdchat"):
        ResultsFile(path, {"x": 1})
    path.write_text('{"not": "an eval file"}\n')
    with pytest.raises(ConfigError, match="is not an rsdchat eval results file"):
        ResultsFile(path, {"x": 1})


async def test_a_backend_failure_stops_the_run_and_keeps_what_finished(tmp_path: Path) -> None:
    run_tools, chosen, _, _ = tools()

    def failing(context: Context, request: StepRequest) -> str:
        if "3+3" in context.question:
            raise BackendError("target server http://x: connection lost")
        return script(TARGET)(context, request)

    run_tools.runtime.engine.target = ScriptedModel(failing, name="t")
    run_tools.engine = run_tools.runtime.engine
    path = tmp_path / "r.jsonl"
    with (
        ResultsFile(path, fingerprint(chosen, "test")) as results,
        pytest.raises(
            BackendError, match="question b, method target-only: target server http://x: connection lost"
        ),
    ):
        await run_methods(run_tools, chosen, PROBLEMS, parse_methods("target-only"), results, lambda *a: None)
    _, records = read_results(path)
    assert [(r["id"], r["method"]) for r in records] == [("a", "target-only")]


# -- sweeps share their steps ------------------------------------------------------------------


async def test_a_sweep_writes_each_step_once_and_gives_what_separate_runs_give(tmp_path: Path) -> None:
    methods = "rsd:delta=0,rsd:delta=0.5,rsd:delta=1"
    swept = await run(tmp_path / "sweep.jsonl", methods, cache=True)
    alone = await run(tmp_path / "alone.jsonl", methods)
    keys = ("correct", "answer", "target_steps", "acceptance")

    def view(records: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[Any, ...]]:
        return {(r["method"], r["id"]): tuple(r[k] for k in keys) for r in records}

    assert view(swept) == view(alone)
    assert all(r["seconds_measured"] >= 0 for r in swept)
    assert [r["cost"]["total_flops"] for r in swept] == [r["cost"]["total_flops"] for r in alone]
    run_tools, chosen, draft, target = tools(cache=True)
    with ResultsFile(tmp_path / "count.jsonl", fingerprint(chosen, "test")) as results:
        await run_methods(run_tools, chosen, PROBLEMS, parse_methods(methods), results, lambda *a: None)
    hits, lookups = run_tools.cache_hits()
    assert len(draft.calls) == 5 and len(target.calls) == 1  # 5 distinct draft contexts, 1 target step
    assert hits > lookups / 2


# -- the summary -------------------------------------------------------------------------------


def test_each_models_speed_comes_from_the_method_where_it_worked_alone() -> None:
    def record(method: str, role: str, read: int, written: int, seconds: float) -> dict[str, Any]:
        cost = {role: {"prefill_tokens": read, "generated_tokens": written, "seconds": seconds}}
        return {"id": "q", "method": method, "correct": True, "cost": cost}

    summaries = summarise(
        [record("target-only", "target", 100, 200, 10.0), record("draft-only", "draft", 100, 300, 10.0)]
    )
    line = speed_line(summaries)
    assert "draft 30.0 tok/s (100 tokens read and 300 written in 10 s" in line
    assert "target 20.0 tok/s" in line
    assert speed_line(summarise([record("rsd", "draft", 1, 1, 1.0)])) == ""


def test_a_sweep_says_what_it_cost_against_one_run_alone() -> None:
    def record(method: str, alone: float, measured: float) -> dict[str, Any]:
        return {"id": "q", "method": method, "correct": True, "seconds": alone, "seconds_measured": measured}

    swept = [record("target-only", 9, 9), record("rsd:delta=0.5", 10, 10), record("rsd:delta=0.7", 12, 3)]
    timing = sweep_time(summarise(swept))
    assert timing == SweepTime(runs=2, measured=13, one_run=11) and timing.ratio == pytest.approx(13 / 11)
    assert "2 rsd runs took 13 s together; one run alone takes 11 s" in timing.describe()
    assert sweep_time(summarise([record("rsd:delta=0.5", 10, 10), record("rsd:delta=0.7", 12, 12)])) is None
    # A report of runs made by separate commands is no sweep, even when some of them were one.
    shown, order = io.StringIO(), [r["method"] for r in swept]
    report(swept, order, as_json=False, markdown=None, out=Console(file=shown), sweep=False)
    assert "sweep" not in shown.getvalue()
    report(swept, order, as_json=False, markdown=None, out=Console(file=shown), sweep=True)
    assert "sweep: 2 rsd runs took 13 s" in shown.getvalue()


def test_interval_and_paired_test_values() -> None:
    low, high = wilson(8, 20)
    assert (round(low, 3), round(high, 3)) == (0.219, 0.613)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert mcnemar(0, 0) == 1.0 and mcnemar(0, 6) == pytest.approx(2 / 64)
    assert mcnemar(3, 3) == 1.0 and mcnemar(1, 9) == pytest.approx(2 * 11 / 1024)


async def test_summary_compares_each_method_with_target_only(tmp_path: Path) -> None:
    records = await run(tmp_path / "r.jsonl", "target-only,draft-only,rsd:delta=1")
    summaries = {s.method: s for s in summarise(records, ["target-only", "draft-only", "rsd:delta=1"])}
    draft, rsd, target = summaries["draft-only"], summaries["rsd:delta=1"], summaries["target-only"]
    assert (target.correct, draft.correct, rsd.correct) == (2, 1, 2)
    assert draft.paired is not None and (draft.paired.wins, draft.paired.losses) == (0, 1)
    assert target.flops_x == 1.0 and draft.flops_x is not None and draft.flops_x < 1.0
    assert rsd.acceptance == 0.75 and rsd.solved_alone == 1 and draft.solved_alone == 1
    assert math.isclose(rsd.target_share or 0.0, 5 / 14)  # 5 of the 14 answer tokens by the target
    json.dumps([s.to_dict() for s in summaries.values()], allow_nan=False)


async def test_concurrency_keeps_every_result(tmp_path: Path) -> None:
    records = await run(tmp_path / "r.jsonl", "target-only,draft-only,rsd", concurrency=2)
    assert sorted((r["method"], r["id"]) for r in records) == sorted(
        (m, p.id) for m in ("target-only", "draft-only", "rsd") for p in PROBLEMS
    )


# -- calibration and pictures ---------------------------------------------------------------------


def test_calibration_picks_the_largest_delta_within_the_budget(tmp_path: Path) -> None:
    from rsdchat.cli.calibrate import choose_delta, write_setting

    shares = {0.5: 0.0, 0.7: 0.2, 0.8: 0.31, 0.9: 0.5}
    assert choose_delta(shares, 0.3) == 0.7 and choose_delta(shares, 0.5) == 0.9
    assert choose_delta({0.5: 0.4, 0.6: None}, 0.3) is None
    config = tmp_path / "config.toml"
    config.write_text('# mine\nreward = "arithmetic"\ndelta = 0.5\n\n[backends.llamacpp]\ndelta = 7\n')
    write_setting(config, "delta", 0.72)
    assert (
        config.read_text()
        == '# mine\nreward = "arithmetic"\ndelta = 0.72\n\n[backends.llamacpp]\ndelta = 7\n'
    )
    fresh = tmp_path / "new" / "config.toml"
    write_setting(fresh, "delta", 0.8)
    assert fresh.read_text() == "delta = 0.8\n"


async def test_plots_are_png_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from rsdchat.evaluation.plots import save_plots

    methods = "target-only,draft-only,rsd:delta=0,rsd:delta=1"
    records = await run(tmp_path / "r.jsonl", methods)
    saved = save_plots(records, methods.split(","), tmp_path / "plots")
    assert [p.name for p in saved] == ["accuracy-vs-flops.png", "delta-sweep.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in saved)
    assert save_plots(records, methods.split(","), tmp_path / "plots") == saved  # its own PNGs: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "accuracy-vs-flops.png").write_text("my notes")  # not a PNG: not rsdchat's to replace
    with pytest.raises(ConfigError, match="exists and is not a PNG"):
        save_plots(records, methods.split(","), mine)
    assert (mine / "accuracy-vs-flops.png").read_text() == "my notes"


async def test_the_markdown_table_is_written_whole_and_never_through_a_link(tmp_path: Path) -> None:
    records = await run(tmp_path / "r.jsonl", "target-only")
    table = tmp_path / "table.md"
    table.write_text("an old table")
    report(records, ["target-only"], as_json=False, markdown=table, out=Console(file=io.StringIO()))
    assert table.read_text().startswith("|")  # a file the user named: replaced
    kept = tmp_path / "kept.md"
    kept.write_text("keep me")
    link = tmp_path / "link.md"
    link.symlink_to(kept)
    with pytest.raises(ConfigError, match="symbolic link"):
        report(records, ["target-only"], as_json=False, markdown=link, out=Console(file=io.StringIO()))
    assert kept.read_text() == "keep me" and link.is_symlink()


class HoldingModel(ScriptedModel):
    """A scripted model with a KV cache: it reads only what its cache does not hold (a token per
    character of the rendered context), as llama.cpp does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: list[int] = []

    def tokens(self, context: Context) -> list[int]:
        return [ord(c) for c in "".join(m.content for m in context.messages) + "|" + context.response]

    async def generate(self, context: Context, request: StepRequest, on_token: Any = None) -> Generation:
        step = await super().generate(context, request, on_token)
        new = self.tokens(context)
        common = next((i for i, (a, b) in enumerate(zip(new, self.held, strict=False)) if a != b), None)
        common = min(len(new), len(self.held)) if common is None else common
        self.held = self.tokens(context.extend(step.text))
        return replace(step, usage=replace(step.usage, prefill_tokens=len(new) - min(common, len(new) - 1)))


async def test_a_step_after_one_from_memory_is_charged_what_it_reads_in_a_run_alone(tmp_path: Path) -> None:
    # Steps from memory leave the model's cache behind: its next real step reads more than a run
    # alone would. Each run's ledger must still say what the run costs alone.
    problems = [Problem("a", "2+2, what is it?", "4"), Problem("b", "Compute 3+3.", "6")]
    methods = parse_methods("draft-only,rsd:delta=0.5,rsd:delta=1")

    hits = []

    async def run_with(path: Path, specs: list[Any], cache: bool) -> list[dict[str, Any]]:
        chosen = Settings(draft="d", target="t", reward="arithmetic")
        wrong = {"2+2": "2 + 2 = 5.\n\n", "3+3": "3 + 3 = 7.\n\n"}  # every first step is rewritten
        draft, target = HoldingModel(script(wrong), name="d"), HoldingModel(script(TARGET), name="t")
        tools = RunTools(Runtime(chosen, Engine(draft=draft, target=target)), cache=cache)
        with ResultsFile(path, fingerprint(chosen, "test")) as results:
            await run_methods(tools, chosen, problems, specs, results, lambda *a: None)
        hits.append(tools.cache_hits()[0])
        return results.records

    swept = await run_with(tmp_path / "sweep.jsonl", methods, cache=True)
    alone = [r for spec in methods for r in await run_with(tmp_path / f"{spec.text}.jsonl", [spec], False)]

    def reads(records: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, ...]]:
        def read(record: dict[str, Any]) -> tuple[int, ...]:
            return tuple(record["cost"][role]["prefill_tokens"] for role in ("draft", "target"))

        return {(r["method"], r["id"]): read(r) for r in records}

    assert hits[0] >= 4  # the rsd runs took their first draft steps from memory
    assert reads(swept) == reads(alone)
