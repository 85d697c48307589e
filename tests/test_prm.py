"""The PRM made for the draft: its file formats, the head's arithmetic, training, labels, checkpoint."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rsdchat.core.errors import ConfigError
from rsdchat.prm import labels, safetensors
from rsdchat.prm.checkpoint import ARCHITECTURE, INDEX, STAMP, write_checkpoint
from rsdchat.prm.head import STEP_TAG, STEP_TAG_ID, PrmHead, probe_head
from rsdchat.prm.train import auc, train_head

RNG = np.random.default_rng(0)


def random_head(hidden: int = 8, k: int = 3, **about: object) -> PrmHead:
    return PrmHead(
        RNG.normal(size=(k, hidden)).astype(np.float32),
        RNG.normal(size=k).astype(np.float32),
        RNG.normal(size=(2, k)).astype(np.float32),
        RNG.normal(size=2).astype(np.float32),
        dict(about),
    )


# -- safetensors ---------------------------------------------------------------------------


def test_safetensors_round_trip_and_byte_copy(tmp_path: Path) -> None:
    a = RNG.normal(size=(3, 4)).astype(np.float32)
    b = np.arange(5, dtype=np.int64)
    safetensors.save(tmp_path / "one.safetensors", {"a": a, "b": b}, {"note": "x"})
    tensors, metadata = safetensors.load(tmp_path / "one.safetensors")
    assert metadata == {"note": "x"}
    assert np.array_equal(tensors["a"], a) and np.array_equal(tensors["b"], b)
    header = safetensors.read_header(tmp_path / "one.safetensors")
    assert header.data_start % 8 == 0
    copied = {"a": (tmp_path / "one.safetensors", header, header.entries["a"])}
    safetensors.save(tmp_path / "two.safetensors", copied)
    assert np.array_equal(safetensors.load(tmp_path / "two.safetensors")[0]["a"], a)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x05\x00\x00\x00\x00\x00\x00\x00nope!",
        struct.pack("<Q", 40) + b'{"a": {"dtype": "F32", "shape": [9], "data_offsets": [0, 36]}}',
    ],
    ids=["empty", "not-json", "tensor-outside-the-file"],
)
def test_a_broken_file_is_one_error_naming_it(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(data)
    with pytest.raises(safetensors.SafetensorsError, match=r"broken\.safetensors"):
        safetensors.load(path)


# -- the head ------------------------------------------------------------------------------


def test_the_head_is_qwen_prms_score_module() -> None:
    head = random_head()
    h = RNG.normal(size=(5, 8))
    logits = np.maximum(h @ head.w1.T + head.b1, 0) @ head.w2.T + head.b2
    assert np.allclose(head.logit(h), logits[:, 1] - logits[:, 0], atol=1e-5)
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert head.p_good(h[0]) == pytest.approx(p[1], abs=1e-6)


def test_padding_to_the_hidden_size_computes_the_same(tmp_path: Path) -> None:
    head = random_head()
    padded = PrmHead(*head.tensors(pad_to=8).values())
    assert padded.w1.shape == (8, 8)
    h = RNG.normal(size=(4, 8))
    assert np.allclose(padded.logit(h), head.logit(h), atol=1e-6)


def test_a_probe_becomes_the_two_class_relu_head_exactly() -> None:
    w, mean, scale = RNG.normal(size=8), RNG.normal(size=8), RNG.uniform(0.5, 2, size=8)
    head = probe_head(w, 0.3, mean, scale, {})
    h = RNG.normal(size=(20, 8)) * 3
    assert np.allclose(head.logit(h), ((h - mean) / scale) @ w + 0.3, atol=1e-4)


def test_head_file_round_trip_and_refusals(tmp_path: Path) -> None:
    head = random_head(model="m", n_params=7)
    head.save(tmp_path / "head.safetensors")
    loaded = PrmHead.load(tmp_path / "head.safetensors")
    assert loaded.about == {"model": "m", "n_params": 7}
    assert np.array_equal(loaded.w1, head.w1)
    safetensors.save(tmp_path / "foreign.safetensors", {"x": np.zeros(2, np.float32)})
    with pytest.raises(ConfigError, match=r"foreign\.safetensors is not a head rsdchat wrote"):
        PrmHead.load(tmp_path / "foreign.safetensors")
    with pytest.raises(ConfigError, match=r"missing\.safetensors cannot be read"):
        PrmHead.load(tmp_path / "missing.safetensors")
    bad = PrmHead(head.w1 * np.nan, head.b1, head.w2, head.b2, {})
    bad.save(tmp_path / "nan.safetensors")
    with pytest.raises(ConfigError, match="not a finite number"):
        PrmHead.load(tmp_path / "nan.safetensors")


# -- training ------------------------------------------------------------------------------


def test_auc_counts_pairs_and_ties() -> None:
    assert auc([0.9, 0.8, 0.1], [0, 0, 1]) == 1.0
    assert auc([0.1, 0.9], [0, 1]) == 0.0
    assert auc([0.5, 0.5], [0, 1]) == 0.5
    assert np.isnan(auc([0.5], [0]))


def test_a_separable_signal_is_learned_and_calibrated() -> None:
    n, hidden = 240, 16
    good = (RNG.uniform(size=n) > 0.2).astype(float)
    states = RNG.normal(size=(n, hidden))
    states[:, 3] += 2.5 * good  # one direction tells good steps from bad ones
    groups = [f"q{i // 4}" for i in range(n)]
    trained = train_head(states, good, groups, {"model": "m"})
    assert trained.cv_auc > 0.9
    p = 1 / (1 + np.exp(-trained.head.logit(states)))
    assert auc(list(p), list((1 - good).astype(int))) > 0.9
    assert abs(p.mean() - good.mean()) < 0.1  # calibrated to the base rate, not to balanced classes
    assert 0 < trained.head.about["default_delta"] < 1 and trained.head.about["model"] == "m"


def test_a_few_questions_labelled_by_their_answers_train_without_a_singular_matrix() -> None:
    """Labels by the answer make whole questions good or bad: a fold may hold one kind only, and the
    out-of-fold scores may separate perfectly (the calibration's fit then has no finite optimum)."""
    states = RNG.normal(size=(9, 4))
    good = np.array([1.0] * 4 + [0.0] * 3 + [1.0] * 2)
    groups = ["a"] * 4 + ["b"] * 3 + ["c"] * 2
    trained = train_head(states, good, groups, {})
    assert np.isfinite(trained.head.logit(states)).all()


def test_one_kind_of_label_is_refused() -> None:
    with pytest.raises(ValueError, match="all of one kind"):
        train_head(np.zeros((4, 2)), np.ones(4), ["a", "b", "c", "d"], {})


# -- labels --------------------------------------------------------------------------------


def test_a_record_cut_short_by_a_kill_is_asked_again(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    labels.append(path, {"id": "a", "labels": ["good"]})
    with path.open("a") as out:
        out.write('{"id": "b", "lab')  # killed mid-line
    assert [r["id"] for r in labels.read_labels(path)] == ["a"]
    labels.append(path, {"id": "b", "labels": ["bad", None]})
    assert [r["id"] for r in labels.read_labels(path)] == ["a", "b"]
    assert labels.counts(labels.read_labels(path)) == {"good": 1, "bad": 1, "none": 1}


# -- labelling (scripted models; the real draft labels in backends/llamacpp/tests/test_draft_prm.py) ---------

DRAFT_STEPS = ["Half of 48 is 24.\n\n", "48 + 24 = 72, so \\boxed{72}."]


def label_with(reference: str, procedure: str, target_says: str | None = None) -> dict[str, Any]:
    import asyncio

    from rsdchat.core.engine import Engine
    from rsdchat.core.policy import Mode, Policy
    from rsdchat.evaluation.data import Problem
    from rsdchat.testing import ScriptedModel

    target = ScriptedModel(lambda context, request: target_says) if target_says is not None else None
    engine = Engine(draft=ScriptedModel(DRAFT_STEPS), target=target)
    by_target = Policy(mode=Mode.TARGET_ONLY) if target is not None else None
    problem = Problem("q", "Clips in April and May?", reference)
    return asyncio.run(
        labels.label(problem, engine, Policy(mode=Mode.DRAFT_ONLY), by_target, "sys", procedure=procedure)
    )


def test_labels_by_the_answer_give_every_step_the_answers_verdict_without_the_target() -> None:
    right = label_with("72", labels.ANSWER)
    assert right["labels"] == ["good", "good"] and right["procedure"] == labels.ANSWER
    wrong = label_with("71", labels.ANSWER)  # no target at all: it is never asked
    assert wrong["labels"] == ["bad", "bad"] and wrong["continuations"] == {}


def test_labels_by_the_target_find_the_first_step_it_cannot_recover_from() -> None:
    # the target answers 71 after any prefix: it reaches the gold 71 from scratch and after step 1,
    # and cannot after both steps (the draft's \boxed{72} ends the answer)
    record = label_with("71", labels.TARGET, "So \\boxed{71}.")
    assert record["labels"] == ["good", "bad"] and record["procedure"] == labels.TARGET
    assert set(record["continuations"]) == {"0", "1"}


def test_a_labels_file_keeps_one_procedure(tmp_path: Path) -> None:
    from rsdchat.cli.train_prm import LabelBy, procedure_for

    path = tmp_path / "labels.jsonl"
    assert procedure_for(path, None) == labels.ANSWER  # a new file: by the answer
    assert procedure_for(path, LabelBy.target) == labels.TARGET
    labels.append(path, {"id": "a", "labels": ["good"]})  # made before procedures were recorded: the target's
    assert procedure_for(path, None) == labels.TARGET
    with pytest.raises(
        ConfigError, match=r"labelled by the target \(math-shepherd-binary-v1\): give --label-by target"
    ):
        procedure_for(path, LabelBy.answer)
    labels.append(path, {"id": "b", "labels": ["bad"], "procedure": labels.ANSWER})
    with pytest.raises(ConfigError, match="the labels mix procedures"):
        procedure_for(path, None)


# -- the checkpoint ------------------------------------------------------------------------


def fake_backbone(folder: Path, hidden: int = 8, model_type: str = "qwen2") -> Path:
    folder.mkdir()
    config = {"model_type": model_type, "hidden_size": hidden, "architectures": ["Qwen2ForCausalLM"]}
    (folder / "config.json").write_text(json.dumps(config))
    vocab = {"a": 0, "<|quad_end|>": STEP_TAG_ID}
    added = [{"id": STEP_TAG_ID, "content": "<|quad_end|>", "special": True}]
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}, "added_tokens": added}))
    decoder = {str(STEP_TAG_ID): {"content": "<|quad_end|>"}}
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
    tensors = {
        "model.embed_tokens.weight": RNG.normal(size=(4, hidden)).astype(np.float16),
        "model.norm.weight": np.ones(hidden, np.float32),
        "lm_head.weight": RNG.normal(size=(4, hidden)).astype(np.float16),
    }
    safetensors.save(folder / "model.safetensors", tensors, {"format": "pt"})
    return folder


def test_the_checkpoint_is_qwen_prms_format(tmp_path: Path) -> None:
    backbone = fake_backbone(tmp_path / "backbone")
    head = random_head(model="m")
    out = write_checkpoint(backbone, head, tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURE] and config["num_labels"] == 2
    weight_map = json.loads((out / INDEX).read_text())["weight_map"]
    assert "lm_head.weight" not in weight_map and "model.norm.weight" in weight_map
    tensors: dict[str, np.ndarray] = {}
    for shard in set(weight_map.values()):
        tensors |= safetensors.load(out / shard)[0]
    assert tensors["score.0.weight"].shape == (8, 8) and tensors["score.2.weight"].shape == (2, 8)
    original = safetensors.load(backbone / "model.safetensors")[0]["model.embed_tokens.weight"]
    assert np.array_equal(tensors["model.embed_tokens.weight"], original)  # copied as it was
    served = PrmHead(
        *(tensors[n] for n in ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"))
    )
    h = RNG.normal(size=(3, 8))
    assert np.allclose(served.logit(h), head.logit(h), atol=1e-5)
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    assert (
        tokenizer["model"]["vocab"][STEP_TAG] == STEP_TAG_ID
        and "<|quad_end|>" not in tokenizer["model"]["vocab"]
    )
    assert json.loads((out / "tokenizer_config.json").read_text())["added_tokens_decoder"][
        str(STEP_TAG_ID)
    ] == {"content": STEP_TAG}
    assert (out / STAMP).is_file()
    write_checkpoint(backbone, head, out)  # its own checkpoint: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone", "ckpt"]  # nothing left behind


def test_the_checkpoint_refuses_what_does_not_fit_and_never_replaces_a_users_folder(tmp_path: Path) -> None:
    head = random_head()
    with pytest.raises(ConfigError, match="'llama' model"):
        write_checkpoint(fake_backbone(tmp_path / "llama", model_type="llama"), head, tmp_path / "a")
    with pytest.raises(ConfigError, match="hidden size 4"):
        write_checkpoint(fake_backbone(tmp_path / "small", hidden=4), head, tmp_path / "b")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not a checkpoint rsdchat wrote"):
        write_checkpoint(fake_backbone(tmp_path / "ok"), head, mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
