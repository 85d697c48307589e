"""Changing the chat's settings on `ChatSession`: when a change applies, and where it is noted."""

from __future__ import annotations

from dataclasses import replace

import pytest
from chat_helpers import BlackBox, Chat, make_runtime, open_chat, shape, wait_until

from rsdchat.chat.events import Cleared, NoteRemoved, NoteShown, StateChanged
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.types import Role
from rsdchat.core.weighting import BinaryStep, Clip, Logistic
from rsdchat.prompts import CHAT_SYSTEM_PROMPT
from rsdchat.testing import ScriptedModel


async def test_delta_keys_merge_consecutive_idle_changes_into_one_note() -> None:
    chat = await open_chat()
    await chat.session.nudge_delta(1)
    assert chat.session.policy is not None and chat.session.policy.weighting == BinaryStep(0.75)
    await chat.session.nudge_delta(1)
    (note,) = chat.records("change")  # consecutive presses make one note
    assert note["text"] == "δ 0.7 → 0.8" and note["knobs"]["delta"] == 0.8 and note["from_step"] is None
    assert note["in_force"]["weighting"] == {"name": "binary", "delta": 0.8}
    await chat.session.nudge_delta(-1)
    assert [r["text"] for r in chat.records("change")] == ["δ 0.7 → 0.75"]
    assert {e.note for e in chat.of(NoteShown)} == {1}  # one note, given new text
    assert [e.text for e in chat.of(NoteShown)] == ["δ 0.7 → 0.75", "δ 0.7 → 0.8", "δ 0.7 → 0.75"]
    await chat.ask("What is 2+2?")
    thresholds = {r["decision"]["weighting"]["delta"] for r in chat.records("step") if r["decision"]}
    assert thresholds == {0.75}
    await chat.session.nudge_delta(1)  # after a question: a note of its own
    assert [r["text"] for r in chat.records("change")] == ["δ 0.7 → 0.75", "δ 0.75 → 0.8"]
    assert chat.kinds()[-1] == "change" and chat.of(NoteShown)[-1].note == 2


async def test_changes_that_go_back_to_where_they_started_remove_their_note() -> None:
    chat = await open_chat()
    await chat.session.nudge_delta(1)
    await chat.session.nudge_delta(-1)
    assert chat.records("change") == [] and [e.note for e in chat.of(NoteRemoved)] == [1]
    assert chat.session.policy is not None and chat.session.policy.weighting == BinaryStep(0.7)


async def test_a_delta_typed_mid_answer_applies_from_the_next_step() -> None:
    chat = await open_chat(delay=0.05)
    answering = chat.start("What is 2+2?")
    await wait_until(lambda: bool(chat.tokens()))
    assert not chat.steps()  # step 0 is being written
    await chat.session.command("/delta 0.95")
    assert chat.records("change") == [] and chat.session.staged
    assert chat.notices()[-1] == "setting changed: δ 0.7 → 0.95 — from the next step"
    assert dict(chat.session.status().rows)["pending"] == "changes apply from the next step"
    await answering
    kinds = [(r["type"], r.get("index"), r.get("author")) for r in chat.session.transcript.records[1:4]]
    assert kinds == [("user", None, None), ("step", 0, "draft"), ("change", None, None)]
    steps = chat.records("step")
    assert steps[0]["decision"]["weighting"] == {"name": "binary", "delta": 0.7} and steps[0]["accepted"]
    judged = [s["decision"]["weighting"]["delta"] for s in steps[1:] if s["decision"]]
    assert judged == [0.95, 0.95]
    assert [s["author"] for s in steps if s["index"] == 2] == ["draft", "target"]  # 0.9 < 0.95
    (change,) = chat.records("change")
    assert change["from_step"] == 1 and change["turn"] == 1 and change["text"] == "δ 0.7 → 0.95"
    (shown,) = chat.of(NoteShown)
    assert shown.in_turn and shown.text == "δ 0.7 → 0.95"
    assert not chat.session.staged


async def test_several_changes_during_one_step_make_one_note() -> None:
    chat = await open_chat(delay=0.05)
    answering = chat.start("What is 2+2?")
    await wait_until(lambda: bool(chat.tokens()))
    await chat.session.nudge_delta(1)
    await chat.session.nudge_delta(1)
    await answering
    (change,) = chat.records("change")
    assert change["text"] == "δ 0.7 → 0.8" and change["from_step"] == 1


async def test_a_change_during_the_last_step_is_noted_after_the_answer() -> None:
    chat = await open_chat(["Only \\boxed{4} here, in one step.\n\n"], delay=0.05)
    answering = chat.start("What is 2+2?")
    await wait_until(lambda: bool(chat.tokens()))
    await chat.session.command("/weighting clip")
    await answering
    assert chat.kinds()[-3:] == ["step", "answer", "change"]
    change = chat.session.transcript.records[-1]
    assert change["from_step"] is None and change["text"] == "weighting binary δ=0.7 → clip"
    assert chat.session.transcript.records[-3]["decision"]["weighting"] == {"name": "binary", "delta": 0.7}
    assert chat.session.policy is not None and chat.session.policy.weighting == Clip()
    assert not chat.of(NoteShown)[-1].in_turn


async def test_a_change_the_step_budget_left_no_step_for_applies_from_the_next_question() -> None:
    chat = await open_chat(["a long step\n\n", "another\n\n"], delay=0.05, max_steps=1)
    answering = chat.start("Go on")
    await wait_until(lambda: bool(chat.tokens()))
    await chat.session.nudge_delta(1)
    trace = await answering
    assert trace.finish_reason == "max_steps"
    assert chat.kinds()[-3:] == ["step", "change", "answer"]
    assert chat.records("change")[0]["from_step"] is None  # no step of this answer was written with it


async def test_the_weighting_command_and_invalid_values() -> None:
    chat = await open_chat()
    await chat.session.command("/weighting logistic 10 0.7")
    await chat.ask("q")
    weightings = {tuple(r["decision"]["weighting"].items()) for r in chat.records("step") if r["decision"]}
    assert weightings == {(("name", "logistic"), ("alpha", 10.0), ("delta", 0.7))}
    before = (chat.session.choice, len(chat.session.transcript.records))
    refused = {
        "/weighting logistic x": "α must be a number, got 'x'",
        "/weighting nope": "unknown weighting 'nope'",
        "/weighting constant 3": "p: Input should be less than or equal to 1 (got 3.0)",
        "/weighting logistic -1": "α: Input should be greater than 0",
        "/delta nan": "δ must be a finite number",
        "/delta": "usage: /delta VALUE",
        "/mode fast": "unknown mode 'fast'",
        "/reward": "usage: /reward NAME [URL [MODEL]]; choose one of: arithmetic",
        "/reward no-such-reward": "unknown reward 'no-such-reward'",
        "/frobnicate [now]": "unknown command /frobnicate; type /help for the list",
        "/load": "usage: /load PATH",
    }
    for line, message in refused.items():
        with pytest.raises(ConfigError) as caught:
            await chat.session.command(line)
        assert message in str(caught.value), line
    assert (chat.session.choice, len(chat.session.transcript.records)) == before  # nothing changed
    await chat.session.nudge_delta(1)  # logistic has a δ too
    assert chat.session.policy is not None and chat.session.policy.weighting == Logistic(10.0, 0.75)
    await chat.session.command("/weighting clip")
    with pytest.raises(ConfigError, match="the clip weighting has no δ"):
        await chat.session.nudge_delta(1)


async def test_a_weighting_the_backend_cannot_serve_is_refused() -> None:
    chat = await open_chat(target=BlackBox())
    with pytest.raises(ConfigError, match="needs log-probabilities the target backend does not give"):
        await chat.session.command("/weighting likelihood-ratio 1")
    assert chat.session.settings.weighting == "binary" and chat.kinds() == ["session"]
    assert chat.session.policy is not None and chat.session.policy.weighting == BinaryStep(0.7)
    with pytest.raises(ConfigError, match="weighting hybrid needs log-probabilities"):
        await chat.session.command("/weighting hybrid 2")  # P_M as well


async def test_an_outcome_reward_makes_an_open_ended_chat() -> None:
    steps = ["Paris is the capital.\n\n", "It has \\boxed{many} museums.\n\n", "Bye.\n\n"]
    scores = iter([3.5, -2.0, 1.0])
    draft = ScriptedModel(steps, name="tiny-draft")
    chat = await open_chat(
        draft, reward=lambda c, s: next(scores), kind="outcome", default_delta=0.0, bounds=None
    )
    policy = chat.session.policy
    assert policy is not None and not policy.stop_at_answer
    assert chat.runtime is not None and policy == replace(chat.runtime.policy(), stop_at_answer=False)
    await chat.ask("Tell me about Paris")
    assert draft.calls[0].messages[0].content == CHAT_SYSTEM_PROMPT
    assert shape(chat.steps()) == [
        (0, "draft", 3.5, True),
        (1, "draft", -2.0, False),
        (1, "target", None, True),
        (2, "draft", 1.0, True),  # no stop at a boxed answer in chat style
        (3, "draft", None, True),  # the reply ends (eos, empty: not scored)
    ]
    assert chat.records("step")[0]["reward_bounds"] is None  # an unbounded reward: drawn centred on δ
    assert chat.records("answer")[0]["finish_reason"] == "eos"
    rows = dict(chat.session.status().rows)
    assert rows["style"] == "chat (auto)" and rows["δ"] == "0 (default)"
    await chat.session.nudge_delta(1)  # unbounded: coarser steps
    assert chat.session.policy is not None and chat.session.policy.weighting == BinaryStep(0.5)
    await chat.session.nudge_delta(-1)
    await chat.session.command("/mode math")
    assert chat.session.policy.stop_at_answer
    await chat.session.command("/reward arithmetic")  # the style back on auto: the prose question's chat
    assert chat.session.policy.weighting == BinaryStep(1.0) and chat.session.policy.reward is not None
    assert chat.session.policy.reward.name == "arithmetic"  # a reward the user set keeps its own δ
    assert not chat.session.policy.stop_at_answer
    (note,) = chat.records("change")[-1:]  # consecutive changes with nothing in between: one note
    assert note["text"] == "reward scripted → arithmetic; δ 0 → 1"


async def test_the_mode_switches_who_writes() -> None:
    chat = await open_chat()
    await chat.session.command("/mode target-only")
    await chat.ask("What is 2+2?")
    assert {(s["author"], s["mode"], s["decision"]) for s in chat.records("step")} == {
        ("target", "target-only", None)
    }
    await chat.session.command("/mode draft-only")
    await chat.ask("Again")
    assert {s["author"] for s in chat.records("step")[3:]} == {"draft"}
    assert chat.records("change")[-1]["text"] == "mode target-only → draft-only"
    assert dict(chat.session.status().rows)["weighting"] == "binary δ=0.7 (unused)"


async def test_mode_rsd_loads_the_models_the_runtime_skipped() -> None:
    chat = await open_chat(mode=Mode.TARGET_ONLY, loaded=(Role.TARGET,))
    assert dict(chat.session.status().rows)["draft"] == "tiny-draft (not loaded)"
    await chat.session.command("/mode rsd")
    assert chat.session.models()[0] is not None
    assert dict(chat.session.status().rows)["draft"] == "tiny-draft"
    await chat.ask("What is 2+2?")
    assert chat.records("step")[0]["author"] == "draft"


async def test_a_mode_whose_model_cannot_be_loaded_is_refused() -> None:
    runtime = make_runtime(mode=Mode.TARGET_ONLY, loaded=(Role.TARGET,))
    runtime.backends["llamacpp"].models[Role.DRAFT] = RuntimeError("no such file")  # type: ignore[attr-defined]
    chat = Chat(runtime)
    await chat.session.open()
    with pytest.raises(ConfigError, match="mode rsd: the models could not be loaded: no such file"):
        await chat.session.command("/mode rsd")
    assert chat.session.settings.mode is Mode.TARGET_ONLY and chat.kinds() == ["session"]


async def test_a_new_chat_keeps_the_settings() -> None:
    chat = await open_chat()
    await chat.session.command("/delta 0.8")
    await chat.ask("What is 2+2?")
    await chat.session.command("/new")
    assert chat.of(Cleared) and chat.kinds() == ["session"] and chat.session.turn == 0
    assert chat.session.transcript.records[0]["knobs"]["delta"] == 0.8
    assert chat.session.acceptance.judged == 0 and chat.session.spent.flops == 0
    assert chat.session.policy is not None and chat.session.policy.weighting == BinaryStep(0.8)
    assert isinstance(chat.events[-1], StateChanged)


async def test_reward_default_goes_back_to_the_configured_reward_and_says_when_delta_resets() -> None:
    chat = await open_chat()  # configured: draft-confidence (a scripted source, default δ 0.7)
    await chat.session.command("/delta 0.8")
    await chat.session.command("/reward arithmetic")
    assert chat.session.settings.reward == "arithmetic" and chat.session.settings.delta is None
    said = [n for n in chat.notices() if n.startswith("reward changed:")]
    assert said and "δ is back to arithmetic's default" in said[-1] and "(it was 0.8)" in said[-1]
    await chat.session.command("/reward default")
    assert chat.session.settings.reward == "draft-confidence" and chat.session.settings.delta is None
    assert chat.session.reward is not None and chat.session.reward.name == "scripted"


async def test_delta_keys_in_a_single_model_mode_say_that_delta_does_nothing() -> None:
    chat = await open_chat()
    await chat.session.command("/mode target-only")
    with pytest.raises(ConfigError, match="δ does nothing in target-only mode: /mode rsd"):
        await chat.session.nudge_delta(1)
    await chat.session.command("/mode rsd")
    await chat.session.nudge_delta(1)  # judged again: δ moves
    assert chat.session.policy is not None and chat.session.policy.weighting == BinaryStep(0.75)
