"""The cost ledger never calls a model of unknown size free: its FLOPs are unknown (null in JSON), not 0."""

from __future__ import annotations

import io
import json

from rich.console import Console

from rsdchat.cli.render import print_summary, record
from rsdchat.core.engine import Engine
from rsdchat.core.policy import Policy
from rsdchat.core.trace import Ledger, Trace
from rsdchat.core.types import Message, Role, Usage
from rsdchat.core.weighting import BinaryStep
from rsdchat.testing import ScriptedModel, ScriptedReward
from rsdchat.units import si


def test_work_by_a_model_of_unknown_size_is_unknown_never_free() -> None:
    ledger = Ledger()
    ledger.add(Role.DRAFT, Usage(10, 5), 1_000)
    ledger.add(Role.TARGET, Usage(20, 4), 0)  # a served model rsdchat cannot size
    ledger.add(Role.REWARD, Usage(seconds=0.01), 0)  # a model-free check: no tokens, and free
    assert ledger.cost(Role.DRAFT).flops == 2 * 1_000 * 15
    assert ledger.cost(Role.TARGET).flops is None and ledger.cost(Role.TARGET).tokens == 24
    assert ledger.cost(Role.REWARD).flops == 0.0
    assert ledger.flops is None  # a total with an unknown part is unknown
    data = ledger.to_dict()
    assert data["draft"]["flops"] == 30_000 and data["reward"]["flops"] == 0.0
    assert data["target"]["flops"] is None and data["total_flops"] is None
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    back = Ledger.from_dict(data)
    assert back.cost(Role.TARGET).flops is None and back.flops is None
    assert back.cost(Role.DRAFT).flops == 30_000 and back.to_dict() == data


def test_unknown_stays_unknown_when_ledgers_are_merged() -> None:
    answer = Ledger()
    answer.add(Role.TARGET, Usage(5, 5), 100)
    step = Ledger()
    step.add(Role.TARGET, Usage(1, 1), 0)
    answer.merge(step)
    assert answer.cost(Role.TARGET).flops is None and answer.cost(Role.TARGET).tokens == 12
    chat = Ledger()
    chat.merge(answer)
    assert chat.flops is None and chat.cost(Role.DRAFT).flops == 0.0
    sized = Ledger()
    sized.add(Role.TARGET, Usage(5, 5), 100)
    assert sized.flops == 2_000.0 and sized.to_dict()["total_flops"] == 2_000.0  # unchanged when known


def test_people_read_unknown_never_zero() -> None:
    assert si(None, "FLOP") == "unknown"
    assert si(0.0, "FLOP") == "0 FLOP" and si(1.5e12, "FLOP") == "1.5 TFLOP"
    trace = Trace("r1", "What is 2 + 3?")
    trace.ledger.add(Role.DRAFT, Usage(10, 5), 1_000)
    trace.ledger.add(Role.TARGET, Usage(20, 4), 0)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    print_summary(console, trace, {"draft": "smollm2-135m", "target": "/ckpt/qwen"})
    out = console.file.getvalue()  # type: ignore[attr-defined]
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "30 kFLOP" in rows["draft"]
    assert "unknown" in rows["target"] and "FLOP" not in rows["target"]
    assert "unknown" in rows["total"] and "0 FLOP" not in out
    assert "FLOPs unknown: rsdchat cannot size the target model; set target_params (e.g. 1.5B)" in out


async def test_solve_json_gives_null_flops_for_a_model_of_unknown_size() -> None:
    draft = ScriptedModel(["d0 a b\n\n", "so \\boxed{5}\n\n"], name="draft", n_params=1_000)
    target = ScriptedModel(["t0\n\n"], name="served", n_params=0)  # what a backend says it cannot size
    reward = ScriptedReward(lambda context, step: 0.0 if "d0" in step.text else 1.0, n_params=500)
    engine = Engine(draft=draft, target=target)
    trace = await engine.solve(
        (Message("user", "What is 2 + 3?"),), Policy(reward=reward, weighting=BinaryStep(0.5))
    )
    assert any(step.author is Role.TARGET for step in trace.steps)  # the target wrote a step
    line = json.dumps(record(trace, question_id="q1", reference=None, settings={}), allow_nan=False)
    cost = json.loads(line)["cost"]
    assert cost["target"]["flops"] is None and cost["total_flops"] is None
    assert cost["draft"]["flops"] > 0 and cost["reward"]["flops"] > 0


def test_an_eval_method_with_an_unknown_size_has_no_flops_ratio() -> None:
    from rsdchat.evaluation.summary import summarise

    def record(method: str, flops: float | None) -> dict[str, object]:
        return {"id": "q", "method": method, "correct": True, "seconds": 1.0, "cost": {"total_flops": flops}}

    known, unknown = summarise([record("target-only", 100.0), record("rsd", None)], ["target-only", "rsd"])
    assert known.flops_x == 1.0 and unknown.flops_x is None  # not 0.00×: a model's size is unknown
