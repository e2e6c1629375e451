"""Ensembles: member scores (M, B), aggregation through core.aggregate, shared vocabulary."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import Ensemble, RewardModel

PROMPTS = ["review of a phone:", "review of a book:", "review of a song:"]
COMPLETIONS = [" great.", " bad and slow.", " fine"]


@pytest.fixture
def ensemble(tiny_tokenizer):
    return Ensemble(
        [
            RewardModel(build_reward_model("small", tiny_tokenizer, seed=s), tiny_tokenizer)
            for s in (0, 1, 2)
        ]
    )


def test_score_members_shape_and_rows(ensemble):
    r_members = ensemble.score_members(PROMPTS, COMPLETIONS)
    assert r_members.shape == (3, 3)
    for m, row in zip(ensemble.members, r_members, strict=True):
        torch.testing.assert_close(row, m.score(PROMPTS, COMPLETIONS))
    # Members built from different seeds disagree.
    assert not torch.allclose(r_members[0], r_members[1])


def test_aggregators(ensemble):
    r = ensemble.score_members(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(ensemble.score(PROMPTS, COMPLETIONS), r.mean(0))
    torch.testing.assert_close(ensemble(PROMPTS, COMPLETIONS, "wco"), r.min(0).values)
    # UWO with population variance (Coste et al.): mean − λ · var.
    uwo = ensemble.score(PROMPTS, COMPLETIONS, "uwo", lam=0.5)
    torch.testing.assert_close(uwo, r.mean(0) - 0.5 * r.var(0, unbiased=False))
    with pytest.raises(ValueError, match="aggregator"):
        ensemble.score(PROMPTS, COMPLETIONS, "max")


def test_single_member_ensemble_is_the_member(tiny_tokenizer):
    rm = RewardModel(build_reward_model("small", tiny_tokenizer, seed=4), tiny_tokenizer)
    ens = Ensemble([rm])
    for name in ("mean", "wco", "median"):
        torch.testing.assert_close(ens.score(PROMPTS, COMPLETIONS, name), rm(PROMPTS, COMPLETIONS))


def test_members_must_share_vocabulary(tiny_tokenizer):
    vocab = {"<pad>": 0, "<eos>": 1, "great": 2, "bad": 3}
    wl = Tokenizer(models.WordLevel(vocab, unk_token="bad"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    other_tok = PreTrainedTokenizerFast(tokenizer_object=wl, pad_token="<pad>", eos_token="<eos>")
    a = RewardModel(build_reward_model("small", tiny_tokenizer), tiny_tokenizer)
    b = RewardModel(build_reward_model("small", other_tok), other_tok)
    with pytest.raises(ValueError, match="member 1's tokenizer vocabulary differs from member 0's"):
        Ensemble([a, b])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def test_from_dirs(tmp_path, tiny_tokenizer, ensemble):
    dirs = []
    for i, m in enumerate(ensemble.members):
        m.model.save_pretrained(tmp_path / str(i))
        tiny_tokenizer.save_pretrained(tmp_path / str(i))
        dirs.append(tmp_path / str(i))
    loaded = Ensemble.from_dirs(dirs)
    assert len(loaded) == 3
    torch.testing.assert_close(
        loaded.score_members(PROMPTS, COMPLETIONS), ensemble.score_members(PROMPTS, COMPLETIONS)
    )
