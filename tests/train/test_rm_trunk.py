"""How much of the trunk trains (train.rm_trunk): LoRA adapters change only the adapters and
the score head, are merged into an ordinary saved model that scores what the adapters scored,
and count r·(d_in + d_out) trained parameters per adapted matrix; a frozen trunk trains the
head alone; bad settings are refused naming the field."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from test_rm import synthetic_pairs

from goodhartlab.cli import main
from goodhartlab.data import write_pairs
from goodhartlab.models.tiny import SIZES, build_reward_model, count_parameters
from goodhartlab.rewards import RewardModel
from goodhartlab.train import RMTrainConfig, train_reward_model
from goodhartlab.train import rm as rm_module

CONFIG = dict(batch_size=16, lr=1e-2, epochs=1, max_length=32, eval_fraction=0.0)
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "down_proj"]}


def _train_capturing_adapters(monkeypatch, tokenizer, backbone, config, out_dir):
    """Train, and keep what the model was just before its adapters were merged: its
    parameters (copied) and its scores of a few held-out texts."""
    texts = synthetic_pairs(6, seed=5)
    prompts, completions = [p.prompt for p in texts], [p.chosen for p in texts]
    captured = {}
    merge = rm_module.merge_trunk

    def capturing_merge(model):
        captured["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        captured["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        scorer = RewardModel(model, tokenizer, max_length=config.max_length)
        captured["scores"] = scorer.score(prompts, completions)
        return merge(model)

    monkeypatch.setattr(rm_module, "merge_trunk", capturing_merge)
    result = train_reward_model(
        synthetic_pairs(48, seed=0), tokenizer, backbone, config, out_dir=out_dir, progress=False
    )
    return result, captured, (prompts, completions)


def test_lora_trains_only_adapters_and_head_and_saves_a_merged_model(
    monkeypatch, tmp_path, tiny_tokenizer
):
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    base = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    config = RMTrainConfig(**CONFIG, lora=LORA)
    result, captured, (prompts, completions) = _train_capturing_adapters(
        monkeypatch, tiny_tokenizer, backbone, config, tmp_path / "rm"
    )

    # Before merging: adapters and the head are all that trains; every other weight is the
    # backbone's, bit for bit (peft names a wrapped weight `<layer>.base_layer.weight`).
    params = captured["params"]
    adapters = {n for n in params if ".lora_A." in n or ".lora_B." in n}
    assert captured["trainable"] == adapters | {"score.weight"}
    assert len(adapters) == 2 * 2 * SIZES["small"].num_hidden_layers  # A, B × 2 targets
    for name, value in params.items():
        if name in adapters or name == "score.weight":
            continue
        base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, base[base_name]), name
    # B starts at zero: nonzero B means the adapters trained; the head left its init.
    assert all(params[n].abs().max() > 0 for n in adapters if ".lora_B." in n)
    init_head = build_reward_model("small", tiny_tokenizer, seed=0)
    rm_module._reinit_score_head(init_head, config.seed)
    assert not torch.equal(params["score.weight"], init_head.score.weight)

    # Merged: the adapted matrices moved by a rank-<= r update, all else is the backbone's.
    merged = dict(result.reward_model.model.named_parameters())
    assert set(merged) == set(base)
    for name, value in merged.items():
        delta = (value - base[name]).detach()
        if name.endswith(("q_proj.weight", "down_proj.weight")):
            rank = torch.linalg.matrix_rank(delta.double(), rtol=1e-6).item()
            assert 1 <= rank <= LORA["r"], (name, rank)
        elif name != "score.weight":
            assert torch.equal(value, base[name]), name

    # The saved directory is an ordinary reward model: no adapter files, no LoRA weights,
    # loaded by RewardModel.from_pretrained (checksums verified), scoring what the adapters
    # scored before the merge.
    path = result.path
    assert not (path / "adapter_config.json").exists()
    loaded = RewardModel.from_pretrained(path)
    assert type(loaded.model).__name__ == "LlamaForSequenceClassification"
    assert not any("lora" in n for n in loaded.model.state_dict())
    torch.testing.assert_close(
        loaded.score(prompts, completions), captured["scores"], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        result.reward_model.score(prompts, completions), captured["scores"], atol=1e-5, rtol=0
    )
    info = json.loads((path / "goodhart_rm.json").read_text())
    assert info["lora"] == {**config.lora.model_dump(), "merged": True}
    assert info["config"]["lora"] == config.lora.model_dump()
    assert info["num_trainable_parameters"] == result.num_trainable_parameters
    assert info["num_parameters"] == count_parameters(backbone)


def test_trainable_parameter_count_is_r_times_d_in_plus_d_out(tiny_tokenizer):
    # size small: hidden 48, MLP 128, 2 layers, no bias. q_proj 48 -> 48: r·(48 + 48) = 384;
    # down_proj 128 -> 48: r·(128 + 48) = 704 (r = 4); 2 layers: 2·(384 + 704) = 2176; the
    # score head 48 -> 1: 48. Total 2224.
    s = SIZES["small"]
    assert (s.hidden_size, s.intermediate_size, s.num_hidden_layers) == (48, 128, 2)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    pairs = synthetic_pairs(16, seed=0)

    def trained(**settings) -> int:
        config = RMTrainConfig(**CONFIG, **settings)
        return train_reward_model(
            pairs, tiny_tokenizer, backbone, config, progress=False
        ).num_trainable_parameters

    assert trained(lora=LORA) == 2224
    assert trained(freeze_trunk=True) == 48
    assert trained() == count_parameters(backbone)


def test_freeze_trunk_trains_the_head_alone(tiny_tokenizer):
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    config = RMTrainConfig(**CONFIG, freeze_trunk=True)
    result = train_reward_model(
        synthetic_pairs(48, seed=0), tiny_tokenizer, backbone, config, progress=False
    )
    model = result.reward_model.model
    init_head = build_reward_model("small", tiny_tokenizer, seed=0)
    rm_module._reinit_score_head(init_head, config.seed)
    assert not torch.equal(model.score.weight, init_head.score.weight)
    base = dict(backbone.named_parameters())
    for name, value in model.named_parameters():
        if name != "score.weight":
            assert torch.equal(value, base[name]), name
    # As a freshly loaded model: nothing left frozen.
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "lora, message",
    [
        ({"r": 0}, r"lora\.r\n.*greater than 0"),
        ({"alpha": -1}, r"lora\.alpha\n.*greater than 0"),
        ({"dropout": 1.0}, r"lora\.dropout\n.*less than 1"),
        ({"target_modules": []}, r"lora\.target_modules\n.*at least 1"),
        ({"rank": 8}, r"lora\.rank\n.*Extra inputs"),
    ],
)
def test_bad_lora_settings_name_the_field(lora, message):
    with pytest.raises(ValidationError, match=message):
        RMTrainConfig(lora=lora)


def test_lora_with_freeze_trunk_is_refused():
    with pytest.raises(ValidationError, match="lora, freeze_trunk: expected at most one"):
        RMTrainConfig(lora={}, freeze_trunk=True)


def test_unknown_target_module_and_unsupported_objective_are_refused(tiny_tokenizer):
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    pairs = synthetic_pairs(16, seed=0)
    config = RMTrainConfig(**CONFIG, lora={"target_modules": ["q_proj", "query"]})
    # The error names the field, the bad name and the names there are.
    with pytest.raises(ValueError, match=r"lora\.target_modules: \['query'\].*q_proj.*v_proj"):
        train_reward_model(pairs, tiny_tokenizer, backbone, config, progress=False)
    config = RMTrainConfig(**CONFIG, objective="armo", lora={})
    with pytest.raises(ValueError, match="lora: not supported with objective 'armo'"):
        train_reward_model(pairs, tiny_tokenizer, backbone, config, progress=False)


def test_train_rm_cli_takes_lora(tmp_path, tiny_tokenizer, capsys):
    backbone = tmp_path / "backbone"
    build_reward_model("small", tiny_tokenizer, seed=0).save_pretrained(backbone)
    tiny_tokenizer.save_pretrained(backbone)
    data = tmp_path / "pairs.jsonl"
    write_pairs(synthetic_pairs(32, seed=0), data)
    argv = ["train-rm", "--data", str(data), "--backbone", str(backbone), "--epochs", "1",
            "--max-length", "32", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*argv, "--lora", "{r: 2, alpha: 4, target_modules: [q_proj, k_proj]}"]) == 0
    member = tmp_path / "out" / "member_0"
    info = json.loads((member / "goodhart_rm.json").read_text())
    expected = {"r": 2, "alpha": 4.0, "dropout": 0.0, "target_modules": ["q_proj", "k_proj"]}
    assert info["config"]["lora"] == expected
    # 2 layers × (q_proj, k_proj: 2·(48 + 48) each) + the head's 48.
    assert info["num_trainable_parameters"] == 2 * 2 * 2 * 96 + 48
    assert RewardModel.from_pretrained(member).max_length == 32

    capsys.readouterr()
    assert main([*argv, "--lora", "r=0"]) == 2
    assert "lora.r" in capsys.readouterr().err


def test_lora_training_is_deterministic_for_a_seed(tiny_tokenizer):
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    pairs = synthetic_pairs(32, seed=0)

    def weights(seed: int) -> dict[str, torch.Tensor]:
        config = RMTrainConfig(**CONFIG, lora={**LORA, "dropout": 0.1}, seed=seed)
        result = train_reward_model(pairs, tiny_tokenizer, backbone, config, progress=False)
        return {n: p.detach() for n, p in result.reward_model.model.named_parameters()}

    a, b, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"],
                           other["model.layers.0.self_attn.q_proj.weight"])  # fmt: skip


def test_lora_with_odin_keeps_the_trunk_and_trains_its_heads(tiny_tokenizer):
    # ODIN reads the last hidden state through the wrapped trunk for its length head.
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    config = RMTrainConfig(**CONFIG, objective="odin", lora={"target_modules": ["v_proj"]})
    result = train_reward_model(
        synthetic_pairs(32, seed=0), tiny_tokenizer, backbone, config, progress=False
    )
    base = dict(backbone.named_parameters())
    merged = dict(result.reward_model.model.named_parameters())
    changed = {n for n in merged if not torch.equal(merged[n], base[n])}
    assert changed == {"score.weight"} | {
        f"model.layers.{i}.self_attn.v_proj.weight" for i in range(2)
    }
    assert "length_heads" in result.pair_inputs


def _tiny_bert(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def test_lora_on_an_encoder_trains_its_pooler_with_the_head(tmp_path, tiny_tokenizer):
    # MiniLM-style: the classifier reads BERT's pooler, which trains with it. r = 2, hidden 32:
    # query, value 2·(32 + 32) = 128 each, 2 layers: 512; pooler 32·32 + 32 = 1056;
    # classifier 32 + 1 = 33. Total 1601.
    backbone = _tiny_bert(tiny_tokenizer)
    config = RMTrainConfig(**CONFIG, lora={"r": 2, "target_modules": ["query", "value"]})
    result = train_reward_model(
        synthetic_pairs(32, seed=0), tiny_tokenizer, backbone, config,
        out_dir=tmp_path / "rm", progress=False,
    )  # fmt: skip
    assert result.num_trainable_parameters == 1601
    base = dict(backbone.named_parameters())
    merged = dict(result.reward_model.model.named_parameters())
    changed = {n for n in merged if not torch.equal(merged[n], base[n])}
    assert changed == {
        *(f"bert.encoder.layer.{i}.attention.self.{m}.weight" for i in range(2)
          for m in ("query", "value")),
        "bert.pooler.dense.weight", "bert.pooler.dense.bias",
        "classifier.weight", "classifier.bias",
    }  # fmt: skip
    texts = synthetic_pairs(4, seed=3)
    prompts, completions = [p.prompt for p in texts], [p.chosen for p in texts]
    torch.testing.assert_close(
        RewardModel.from_pretrained(result.path).score(prompts, completions),
        result.reward_model.score(prompts, completions),
        atol=1e-5,
        rtol=0,
    )
