"""rsdchat.doctor with backends that cannot diagnose themselves, and with broken settings."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from rsdchat import doctor
from rsdchat.core.errors import ConfigError
from rsdchat.core.policy import Mode
from rsdchat.core.protocols import Backend
from rsdchat.core.types import Role
from rsdchat.rewards import Product
from rsdchat.rewards.sources import Arithmetic
from rsdchat.settings import Settings
from rsdchat.testing import ScriptedModel


def settings(**fields: Any) -> Settings:
    return Settings(
        **{"backend": "scripted", "draft": "small", "target": "small", "reward": "arithmetic", **fields}
    )


class ScriptedBackend:
    """A backend without `diagnose`: the doctor loads the model and times one token."""

    def __init__(self) -> None:
        self.closed = False

    def generator(self, role: Role, model: str) -> ScriptedModel:
        if model == "missing":
            raise ConfigError(f"model file not found: {model}")
        return ScriptedModel(["Hello there.\n\n"], name=model)

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedBackend:
    backend = ScriptedBackend()

    def load(name: str, configs: object) -> Backend:
        return backend

    monkeypatch.setattr("rsdchat.plugins.load_backend", load)
    return backend


async def test_a_backend_without_diagnose_is_checked_by_writing_a_token(scripted: ScriptedBackend) -> None:
    checks = await doctor.diagnose(settings(target="missing"))
    draft, target, reward = checks
    assert draft.ok and draft.model_served and draft.streaming and draft.logprobs is True
    assert draft.reachable is None and draft.latency_ms is not None
    assert not target.ok and target.error == "model file not found: missing"
    assert reward.ok and reward.backend == "local"
    assert scripted.closed


class VerifyingBackend(ScriptedBackend):
    """A backend that checks its model files in full first (llama.cpp: a whole-file sha256)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[tuple[Role, str]] = []

    def verify(self, role: Role, model: str) -> str:
        self.verified.append((role, model))
        if model == "damaged":
            raise ConfigError("model 'damaged': checksum mismatch; reinstall it")
        return f"the cached copy of {model} was damaged: rebuilt from its packages"


async def test_a_backend_that_verifies_its_model_files_is_asked_to_and_its_note_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 23, row 15: `rsdchat doctor` said fine about a damaged model; now it checks in full."""
    backend = VerifyingBackend()
    monkeypatch.setattr("rsdchat.plugins.load_backend", lambda name, configs: backend)
    draft, target, _ = await doctor.diagnose(settings(target="damaged"))
    assert backend.verified == [(Role.DRAFT, "small"), (Role.TARGET, "damaged")]
    assert draft.ok and draft.notes == (
        "runs in process",
        "the cached copy of small was damaged: rebuilt from its packages",
    )
    assert not target.ok and target.error == "model 'damaged': checksum mismatch; reinstall it"
    assert target.model_served is None  # not loaded: the check came first


async def test_only_the_roles_of_the_mode_are_checked(scripted: ScriptedBackend) -> None:
    checks = await doctor.diagnose(settings(mode=Mode.TARGET_ONLY))
    assert [c.role for c in checks] == ["target"]


async def test_an_unknown_backend_or_a_reward_that_cannot_be_built_is_a_row_not_a_crash() -> None:
    checks = await doctor.diagnose(settings(backend="no-such-backend", reward="target-logprob"))
    assert [c.ok for c in checks] == [False, False, False]
    assert "unknown backend 'no-such-backend'" in (checks[0].error or "")
    assert "reward target-logprob needs a target model" in (checks[2].error or "")
    report = doctor.to_json(checks)
    assert report["ok"] is False and report["roles"][2]["error"] == checks[2].error
    console = Console(record=True, width=240)
    console.print(doctor.render(checks))
    assert "unknown backend" in console.export_text()


class RemoteReward:
    """A reward source on a server: it diagnoses itself and holds a connection to close."""

    name = "remote-prm"
    kind = "process"
    default_delta = 0.7
    bounds = (0.0, 1.0)
    n_params = 0
    closed = False

    async def score(self, context: object, step: object) -> object:
        raise NotImplementedError

    async def diagnose(self) -> doctor.RoleCheck:
        return doctor.RoleCheck("reward", "openai", self.name, "http://prm:8003", True, True, reward_api=True)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_product_reward_is_checked_part_by_part(
    scripted: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = RemoteReward()

    def make_reward(spec: str, context: object) -> Product:
        return Product((remote, Arithmetic()))  # type: ignore[arg-type]

    monkeypatch.setattr("rsdchat.rewards.make_reward", make_reward)
    checks = await doctor.diagnose(settings(reward="draft-confidence*arithmetic"))
    rewards = [c for c in checks if c.role == "reward"]
    assert [(c.backend, c.model) for c in rewards] == [("openai", "remote-prm"), ("local", "arithmetic")]
    assert rewards[0].reward_api and remote.closed
