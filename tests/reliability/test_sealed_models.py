"""Saved reward models are sealed with checksums: a damaged one is refused with a clear
message, and a study's cache retrains it (issue 17, defect 5; the unreadable-model inputs)."""

import json

import pytest

from goodhartlab.artifacts import MANIFEST, verify
from goodhartlab.rewards import RewardModel
from goodhartlab.train.rm import RM_INFO_FILE, save_reward_model


@pytest.fixture
def saved(tmp_path, tiny_reward_model, tiny_tokenizer):
    out = save_reward_model(
        tiny_reward_model, tiny_tokenizer, tmp_path / "rm", {"format_version": 1}
    )
    assert verify(out) is None  # sealed as it is saved
    return out


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_intact_reward_model_loads(saved):
    assert RewardModel.from_pretrained(saved).score(["a"], ["b"]).shape == (1,)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: _flip_a_byte(d / "model.safetensors"), "checksum mismatch in model.safetensors"),
        (
            lambda d: (d / "model.safetensors").write_bytes(
                (d / "model.safetensors").read_bytes()[:1000]
            ),
            "checksum mismatch in model.safetensors",
        ),
        (lambda d: (d / "model.safetensors").unlink(), "files missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "checksum mismatch in config.json"),
    ],
    ids=["bit-flip", "truncated", "missing", "invalid-config"],
)
def test_a_damaged_reward_model_is_refused_naming_the_directory(saved, damage, reason):
    damage(saved)
    with pytest.raises(ValueError, match="reward-model directory is damaged") as e:
        RewardModel.from_pretrained(saved)
    assert str(saved) in str(e.value) and reason in str(e.value)


def test_an_unsealed_unreadable_model_is_one_clear_error(saved):
    (saved / MANIFEST).unlink()  # e.g. a directory from elsewhere
    (saved / "model.safetensors").write_bytes(b"\x13random bytes, not safetensors" * 10)
    with pytest.raises(ValueError, match="cannot load a reward model") as e:
        RewardModel.from_pretrained(saved)
    assert str(saved) in str(e.value)


def test_pickled_weights_are_not_read(saved, tiny_reward_model):
    import torch

    (saved / MANIFEST).unlink()
    (saved / "model.safetensors").unlink()
    torch.save(tiny_reward_model.state_dict(), saved / "pytorch_model.bin")
    with pytest.raises(ValueError, match="cannot load a reward model"):
        RewardModel.from_pretrained(saved)


def test_a_file_or_missing_path_is_one_clear_error(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a reward-model directory, got a file"):
        RewardModel.from_pretrained(f)
    with pytest.raises(ValueError, match="cannot load a reward model"):
        RewardModel.from_pretrained(tmp_path / "nowhere")


def test_a_cached_ensemble_with_a_damaged_member_is_not_reused(tmp_path, saved):
    import shutil

    from goodhartlab.experiments.proxies import _whole_ensemble

    ens = tmp_path / "ens"
    for i in range(2):
        shutil.copytree(saved, ens / f"member_{i}")
    (ens / "ensemble.json").write_text(
        json.dumps({"members": [{"path": "member_0"}, {"path": "member_1"}]})
    )
    assert [m["path"] for m in _whole_ensemble(ens)] == ["member_0", "member_1"]
    _flip_a_byte(ens / "member_1" / "model.safetensors")
    assert _whole_ensemble(ens) is None
    assert (ens / "member_0" / RM_INFO_FILE).is_file()


def test_an_unsealed_invalid_config_is_one_clear_error(saved):
    (saved / MANIFEST).unlink()
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot load a reward model") as e:
        RewardModel.from_pretrained(saved)
    assert str(saved) in str(e.value)
