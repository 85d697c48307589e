"""A chat's reward sources: a reward server given in the chat (`/reward orm URL`), and step delimiters.

`OrmServer` (in chat_helpers.py) is a real HTTP server on 127.0.0.1 speaking vLLM's `/v1/models`
and `/classify` as rsdchat's `orm` reward source uses them, so these tests (and the app's, in
test_tui.py) go through the real openai plugin, its HTTP client and a socket.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chat_helpers import Chat, OrmServer, make_runtime, needs_openai, open_chat, shape

from rsdchat.chat.choice import Choice
from rsdchat.chat.commands import parse_command, server_rewards
from rsdchat.chat.rewards import Rewards, in_chat
from rsdchat.core.errors import ConfigError
from rsdchat.in_force import ChatExtras
from rsdchat.settings import Settings


@pytest.fixture
def orm_server() -> Iterator[OrmServer]:
    with OrmServer() as server:
        yield server


PROSE = [
    "Paris is the capital of France.\n\n",
    "It is wrong to say it is small.\n\n",
    "It has many museums.\n\n",
]
PROSE_TARGET = ["Paris is in France.\n\n", "It is a large city.\n\n", "Bye.\n\n"]


@needs_openai
async def test_a_reward_server_given_in_the_chat_judges_the_steps(orm_server: OrmServer) -> None:
    chat = await open_chat(PROSE, PROSE_TARGET)
    await chat.session.command(f"/reward orm {orm_server.url}")
    choice = chat.session.choice
    assert (choice.settings.reward, choice.settings.delta) == ("orm", None)
    assert (choice.extras.reward_url, choice.extras.style) == (orm_server.url, None)
    reward = chat.session.reward
    assert reward is not None and reward.kind == "outcome" and reward.bounds is None
    status = dict(chat.session.status().rows)
    assert (status["reward"], status["server"], status["style"]) == ("orm", orm_server.url, "chat (auto)")
    trace = await chat.ask("Tell me about Paris")
    assert shape(chat.steps()) == [
        (0, "draft", pytest.approx(2.6), True),
        (1, "draft", -1.5, False),
        (1, "target", None, True),
        (2, "draft", pytest.approx(3.5), True),
        (3, "draft", None, True),  # the draft ends the reply: an empty step, not judged
    ]
    assert trace.finish_reason == "eos" and trace.text.startswith("Paris is the capital")
    # the server scored the reply so far, each time with the step being judged at its end
    assert orm_server.replies[:2] == ["Paris is the capital of France.", PROSE[0] + PROSE[1].strip()]
    step = chat.records("step")[0]
    assert step["reward_source"] == "orm" and step["reward_bounds"] is None
    assert step["decision"]["weighting"] == {"name": "binary", "delta": 0.0}
    user = chat.records("user")[0]
    assert user["in_force"]["reward_url"] == orm_server.url and user["in_force"]["style"] == "chat"


@needs_openai
async def test_a_served_reward_without_a_server_says_what_to_type(orm_server: OrmServer) -> None:
    chat = await open_chat()
    before = chat.session.choice
    with pytest.raises(ConfigError) as caught:
        await chat.session.command("/reward orm")
    assert str(caught.value) == "reward orm needs the reward server's URL: type /reward orm http://HOST:PORT"
    assert chat.session.choice == before
    with pytest.raises(ConfigError, match=r"model 'other' is not served by .* type /reward orm http://"):
        await chat.session.command(f"/reward orm {orm_server.url} other")
    await chat.session.command(f"/reward orm {orm_server.url} tiny-orm")  # what the message said works
    assert chat.session.choice.extras.reward_model == "tiny-orm" and chat.session.reward is not None


@needs_openai
async def test_settings_naming_a_served_reward_open_the_chat_to_be_fixed_in_it(orm_server: OrmServer) -> None:
    runtime = make_runtime(PROSE, PROSE_TARGET)
    runtime.settings = runtime.settings.replace(reward="orm")
    runtime.reward = None  # as open_models leaves it: the chat builds its rewards
    chat = Chat(runtime)
    await chat.session.open()
    assert chat.session.policy is None and chat.session.runtime is not None
    why = chat.session.why_not_ask()
    assert why is not None and "type /reward orm http://HOST:PORT" in why
    await chat.session.command(f"/reward orm {orm_server.url}")
    assert chat.session.why_not_ask() is None
    assert (await chat.ask("Tell me about Paris")).text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/reward judge http://127.0.0.1:9", "reward judge does not use a reward server; a URL is for: "),
        ("/reward orm ftp://x", "'ftp://x' is not an http(s) URL"),
        ("/reward orm http://x a b", "one model name after the URL, got 'a b'"),
        ("/reward http://x", "the reward's name comes first"),
        ("/steps words", "choose one of: paragraph (blank line), line (line break), sentence"),
    ],
)
async def test_bad_reward_and_steps_commands_change_nothing(line: str, message: str) -> None:
    chat = await open_chat()
    before = chat.session.choice
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await chat.session.command(line)
    assert chat.session.choice == before


@needs_openai
def test_the_reward_context_carries_the_chat_server() -> None:
    assert {"orm", "qwen-prm"} <= set(server_rewards())
    rewards = Rewards(Settings())
    orm = Choice(Settings(reward="orm"))
    choice = Choice(orm.settings, ChatExtras(reward_url="http://127.0.0.1:1234", reward_model="rm"))
    config = rewards.configs(choice)["openai"]
    assert (config.reward_url, config.reward_model) == ("http://127.0.0.1:1234", "rm")  # type: ignore[attr-defined]
    assert rewards.configs(orm) == dict(Settings().backends)
    assert rewards.key(choice) == ("orm", None, "http://127.0.0.1:1234", "rm", "\n\n")
    judge = Choice(Settings(reward="judge"), ChatExtras(steps="line"))
    assert rewards.key(judge) == ("judge", None, None, None, "")  # reads no delimiter
    name, rest = parse_command("/reward qwen-prm http://gpu:8000")
    assert name == "reward" and rest == "qwen-prm http://gpu:8000"


def test_in_chat_rewrites_flags_as_commands() -> None:
    choice = Choice(Settings(reward="orm"), ChatExtras(reward_url="http://h:1"))
    served = "reward model 'x' is not served by http://h:1 (it serves: a, b)"
    served += "; pass --reward-model with one of those names"
    assert in_chat(served, choice).endswith("(it serves: a, b); type /reward orm http://h:1 MODEL")
    choose = "setting reward_model: reward server http://h:1 serves a, b; say which one to use"
    assert in_chat(choose, choice) == choose + ": type /reward orm http://h:1 MODEL"


SENTENCES = ["Paris is big. ", "It is wrong. ", "It has museums. ", ""]


@pytest.mark.parametrize(
    ("steps", "stop"),
    [("paragraph", ("\n\n",)), ("line", ("\n",)), ("sentence", (". ", "? ", "! ", "\n"))],
)
async def test_steps_set_where_a_step_ends(steps: str, stop: tuple[str, ...]) -> None:
    chat = await open_chat(kind="outcome", default_delta=0.0, bounds=None)
    await chat.session.command(f"/steps {steps}")
    assert chat.session.policy is not None and chat.session.policy.stop == stop
    assert dict(chat.session.status().rows)["steps"] == steps
    assert chat.session.in_force().to_dict()["steps"] == steps


async def test_sentence_steps_judge_a_reply_without_blank_lines_sentence_by_sentence() -> None:
    chat = await open_chat(
        SENTENCES, ["-", "It is large. ", "", ""], lambda c, s: -1.0 if "wrong" in s.text else 1.0,
        kind="outcome", default_delta=0.0, bounds=None,
    )  # fmt: skip
    await chat.session.command("/steps sentence")
    assert [r["text"] for r in chat.records("change")] == ["steps paragraph → sentence"]
    trace = await chat.ask("Tell me about Paris")
    assert trace.text == "Paris is big. It is large. It has museums. "
    judged = [(s.index, s.author.value, s.accepted) for s in chat.steps() if s.decision is not None]
    assert judged == [(0, "draft", True), (1, "draft", False), (2, "draft", True)]
    await chat.session.command("/steps default")
    assert chat.session.policy is not None and chat.session.policy.stop == ("\n\n",)


async def test_one_long_step_in_a_chat_says_how_to_judge_it_finer() -> None:
    reply = ["Paris is big. " * 30]  # no blank line: one step, one decision
    chat = await open_chat(reply, reply, kind="outcome", default_delta=0.0, bounds=None)
    await chat.ask("Tell me about Paris")
    assert any("/steps sentence" in notice for notice in chat.notices()), chat.notices()
