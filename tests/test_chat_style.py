"""The chat's style follows the question; prose gets the chat's reward and δ; RSD that came down to
target-only is said once per chat."""

from __future__ import annotations

from dataclasses import replace

import pytest
from chat_helpers import Chat, make_runtime, open_chat

from rsdchat.chat.style import looks_like_math
from rsdchat.core.weighting import BinaryStep
from rsdchat.in_force import (
    CHAT_DELTA,
    CHAT_REWARD,
    CHAT_STEPS,
    DEFAULT_REWARD,
    STEPS,
    ChatExtras,
    Style,
    in_force,
    reward_in_force,
)
from rsdchat.prompts import CHAT_SYSTEM_PROMPT, MATH_SYSTEM_PROMPT
from rsdchat.rewards.sources import DraftConfidence
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedReward

PROSE = [
    "Write a short haiku about autumn.",
    "Explain what a hash table is in three sentences.",
    "Tell me about Paris",
    "hello",
    "Compare trains and planes for travelling between two cities 500 km apart.",
    "Write a polite note asking the neighbours to keep the noise down after 10 pm.",
    "Write a Python function that returns the sum of a list",
]
MATH = [
    "What is 15% of 240?",
    "Solve 2x+3=7",
    "What is 2+2?",
    "Compute \\frac{3}{4} of 12 and put it in \\boxed{}",
    "What is the derivative of x^3?",
    "Janet has 3 apples and buys 5 more. How many does she have?",
    "If a train travels 60 miles in 1.5 hours, what is its speed?",
    "Is 97 prime?",
]


@pytest.mark.parametrize("question", PROSE)
def test_prose_does_not_look_like_math(question: str) -> None:
    assert not looks_like_math(question)


@pytest.mark.parametrize("question", MATH)
def test_math_looks_like_math(question: str) -> None:
    assert looks_like_math(question)


def test_a_prose_question_gets_the_chat_reward_and_delta() -> None:
    settings = Settings()
    assert settings.reward == DEFAULT_REWARD and CHAT_REWARD != DEFAULT_REWARD
    haiku = ChatExtras(question="Write a short haiku about autumn.")
    assert reward_in_force(settings, haiku) == (CHAT_REWARD, CHAT_DELTA)
    reward = DraftConfidence(default_delta=CHAT_DELTA)  # as the chat builds it for prose
    now = in_force(settings, reward, haiku)
    assert now.style is Style.CHAT and now.system == CHAT_SYSTEM_PROMPT and not now.policy.stop_at_answer
    assert now.weighting == BinaryStep(CHAT_DELTA) and now.reward == CHAT_REWARD
    assert now.steps == CHAT_STEPS and now.policy.stop == STEPS[CHAT_STEPS]
    paragraphs = in_force(settings, reward, replace(haiku, steps="paragraph"))  # /steps set: kept
    assert paragraphs.steps == "paragraph" and paragraphs.policy.stop == ("\n\n",)
    assert in_force(settings.replace(delta=0.3), reward, haiku).weighting == BinaryStep(0.3)  # δ set: kept
    # a reward the user chose is kept, with its own δ
    assert reward_in_force(settings.replace(reward="target-logprob"), haiku) == ("target-logprob", None)
    # the style set by the user wins over the question
    assert reward_in_force(settings, ChatExtras(style=Style.MATH, question=haiku.question)) == (
        DEFAULT_REWARD,
        None,
    )
    assert reward_in_force(settings, ChatExtras(style=Style.CHAT)) == (CHAT_REWARD, CHAT_DELTA)


def test_a_math_question_gets_the_math_defaults() -> None:
    settings = Settings()
    sums = ChatExtras(question="What is 15% of 240?")
    assert reward_in_force(settings, sums) == (DEFAULT_REWARD, None)
    reward = ScriptedReward(lambda c, s: 1.0, name=DEFAULT_REWARD, default_delta=0.88)
    now = in_force(settings, reward, sums)
    assert now.style is Style.MATH and now.system == MATH_SYSTEM_PROMPT and now.policy.stop_at_answer
    assert now.weighting == BinaryStep(0.88)


def test_without_extras_or_a_question_nothing_changes() -> None:
    settings = Settings()
    reward = ScriptedReward(lambda c, s: 1.0, name=DEFAULT_REWARD, default_delta=0.88)
    assert reward_in_force(settings, None) == (DEFAULT_REWARD, None)  # solve, eval, serve
    for extras in (None, ChatExtras()):  # no extras; a chat before its first question
        now = in_force(settings, reward, extras)
        assert now.style is Style.MATH and now.system == MATH_SYSTEM_PROMPT and now.policy.stop_at_answer
        assert now.weighting == BinaryStep(0.88) and now.policy.stop == ("\n\n",) and now.steps == "paragraph"
    assert reward_in_force(settings, ChatExtras()) == (DEFAULT_REWARD, None)


async def test_a_chat_follows_each_question() -> None:
    runtime = make_runtime(reward=lambda c, s: 0.95)
    runtime.settings = runtime.settings.replace(reward=DEFAULT_REWARD)  # the reward left at its default
    chat = Chat(runtime)
    session = chat.session
    await session.open()
    await chat.ask("What is 2+2?")
    (asked,) = chat.records("user")
    assert asked["in_force"]["style"] == "math" and asked["in_force"]["reward"] == "scripted"
    await chat.ask("Write a short haiku about autumn.")
    asked = chat.records("user")[-1]
    assert asked["in_force"]["style"] == "chat" and asked["in_force"]["reward"] == CHAT_REWARD
    assert asked["system"] == CHAT_SYSTEM_PROMPT
    assert asked["in_force"]["weighting"]["delta"] == CHAT_DELTA
    rows = dict(session.status().rows)
    assert rows["reward"] == CHAT_REWARD and rows["style"] == "chat (auto)"
    assert rows["δ"] == f"{CHAT_DELTA:g} (default)" and rows["steps"] == CHAT_STEPS
    judged = [r["reward_source"] for r in chat.records("step") if r["turn"] == 2 and r["decision"]]
    assert judged and set(judged) == {CHAT_REWARD}  # each step says which reward decided
    assert "question" not in session.choice.to_dict()  # the knobs a transcript keeps: the settings only
    await chat.ask("And 3+3?")  # back to math, with the default reward
    asked = chat.records("user")[-1]
    assert asked["in_force"]["style"] == "math" and asked["in_force"]["reward"] == "scripted"


async def test_rsd_that_came_down_to_target_only_is_said_once_per_chat() -> None:
    chat = await open_chat(reward=lambda c, s: 0.4)  # δ 0.7: every draft is rejected
    await chat.ask("What is 2+2?")
    said = [n for n in chat.notices("warning") if n.startswith("the target wrote it all")]
    assert len(said) == 1
    assert "all 3 draft steps were rejected" in said[0] and "r 0.4 against δ 0.7" in said[0]
    assert "/delta 0.4" in said[0] and f"/reward {CHAT_REWARD}" in said[0] and "/mode target-only" in said[0]
    await chat.ask("And 3+3?")
    assert len([n for n in chat.notices("warning") if n.startswith("the target wrote it all")]) == 1
    await chat.session.command("/new")
    await chat.ask("What is 2+2?")
    assert len([n for n in chat.notices("warning") if n.startswith("the target wrote it all")]) == 2


async def test_a_chat_that_keeps_drafts_hears_nothing() -> None:
    chat = await open_chat()  # by_text: one draft of three rejected
    await chat.ask("What is 2+2?")
    assert not [n for n in chat.notices() if "wrote it all" in n]
    chat = await open_chat(reward=lambda c, s: 0.4, mode="target-only")  # no draft judged
    await chat.ask("What is 2+2?")
    assert not [n for n in chat.notices() if "wrote it all" in n]
