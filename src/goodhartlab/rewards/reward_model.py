"""Learned reward models: the one RM tokenization, batching, and the ``RewardModel`` scorer.

The text a reward model reads is ``prompt + completion`` tokenized without special tokens,
followed by one ``eos`` token; the reward is the score head applied to the hidden state of
that last token. Training (``goodhartlab.train.rm``) and scoring both go through
:func:`rm_batch_input_ids`, :func:`collate_rm_inputs` and :func:`reward_at_last_token`, so
the two can never disagree about what a pair looks like.

A tool-augmented reward model (Themis, Li et al. 2024, arXiv:2310.01045) reads
``prompt + completion + tool(prompt, completion)``: the answer of a tool of the registry
``RM_TOOLS`` (e.g. ``toy_text_counter``), appended in :func:`rm_batch_input_ids`, which
training and scoring share; a saved model names its tool in ``goodhart_rm.json``.

A domain-knowledge reward model (``core.feature_reward``) adds a linear layer over the
standardized features of a feature set of ``RM_FEATURES`` to its backbone's score
(``rewards.feature_head.FeatureHead``, saved in ``goodhart_rm.json`` as ``feature_head``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from goodhartlab.artifacts import MANIFEST, verify
from goodhartlab.models.loading import check_vocabulary
from goodhartlab.registry import RM_TOOLS
from goodhartlab.rewards.feature_head import FeatureHead, compute_features


def with_tool_answers(
    prompts: Sequence[str], completions: Sequence[str], tool: str | None
) -> list[str]:
    """The completions a reward model with ``tool`` reads: ``completion + tool(prompt,
    completion)`` (Themis), or the completions themselves when ``tool`` is None."""
    if tool is None:
        return list(completions)
    call = RM_TOOLS[tool]
    return [c + call(p, c) for p, c in zip(prompts, completions, strict=True)]


def rm_batch_input_ids(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_length: int,
    *,
    tool: str | None = None,
) -> list[list[int]]:
    """Token ids a reward model reads, for each (prompt, completion).

    ids = tokenizer(prompt + completion [+ answer], add_special_tokens=False).input_ids + [eos],
    with answer = ``RM_TOOLS[tool](prompt, completion)`` when ``tool`` is given.
    Sequences longer than ``max_length`` are truncated from the left: the first tokens
    (the start of the prompt) are dropped, so the end of the completion and the eos, which
    the reward is read from, are always kept. A completion longer than ``max_length - 1``
    tokens loses its own beginning too.
    """
    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions: expected the same length, got {len(prompts)} "
            f"and {len(completions)}"
        )
    if max_length < 2:
        raise ValueError(f"max_length: expected >= 2 (text + eos), got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer: expected an eos_token; reward models read the score there")
    if not prompts:
        return []
    completions = with_tool_answers(prompts, completions, tool)
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    keep = max_length - 1
    return [[*ids[-keep:], eos] if len(ids) > keep else [*ids, eos] for ids in encoded]


def rm_input_ids(tokenizer, prompt: str, completion: str, max_length: int) -> list[int]:
    """Token ids a reward model reads for one pair; see :func:`rm_batch_input_ids`."""
    return rm_batch_input_ids(tokenizer, [prompt], [completion], max_length)[0]


def collate_rm_inputs(
    batch_ids: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[Tensor, Tensor]:
    """Right-pad token id lists into ``(input_ids, attention_mask)``, both Shape: (B, T)."""
    if not batch_ids:
        raise ValueError("batch_ids: expected at least one sequence")
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for i, ids in enumerate(batch_ids):
        input_ids[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask


def reward_at_last_token(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, *, return_hidden: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Reward of each sequence: the score head at the last position where the mask is 1.

    For decoder reward models with a per-token ``score`` head (Llama, Qwen, Mistral, GPT-2,
    ... ``*ForSequenceClassification``), the base model runs once and the head is applied to
    the hidden state picked with ``attention_mask``; the model's own pooling, which guesses
    the last token from the pad id, is bypassed. Other models (encoders with a pooled
    classifier) are called as they are and their single logit is returned.

    Args:
        model: a sequence-classification model with one label.
        input_ids: Shape: (B, T).
        attention_mask: 1 for real tokens, 0 for padding. Shape: (B, T).

        return_hidden: also return the hidden state the head reads (InfoRM's latent; the
            last layer at the last real token). Shape: (B, H). Decoder models only.

    Returns:
        Rewards. Shape: (B,)
    """
    assert input_ids.ndim == 2 and attention_mask.shape == input_ids.shape, (
        input_ids.shape,
        attention_mask.shape,
    )
    head = getattr(model, "score", None)
    base = getattr(model, "base_model", None)
    if isinstance(head, nn.Module) and base is not None and base is not model:
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (positions * attention_mask.to(positions.dtype)).argmax(dim=1)
        rows = torch.arange(input_ids.shape[0], device=hidden.device)
        h_last = hidden[rows, last]
        if hasattr(head, "prompt_positions"):  # a prompt-conditioned head (rewards.armo_head)
            h_prompt = hidden[rows, head.prompt_positions(input_ids, attention_mask)]
            rewards = head(h_last, h_prompt)
        else:
            rewards = head(h_last)
    else:
        if return_hidden:
            raise ValueError(
                f"reward model {type(model).__name__}: latents need a decoder with a per-token "
                "`score` head"
            )
        rewards = model(input_ids=input_ids, attention_mask=attention_mask).logits
    if rewards.shape[-1] != 1:
        raise ValueError(
            f"reward model: expected one output (num_labels=1), got {rewards.shape[-1]}"
        )
    return (rewards[:, 0], h_last) if return_hidden else rewards[:, 0]


def default_max_length(tokenizer, model: nn.Module) -> int:
    """The longest input both the model's positions and the tokenizer allow."""
    limits = [
        getattr(getattr(model, "config", None), "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    limits = [x for x in limits if isinstance(x, int) and 2 <= x < 10**9]
    return min(limits) if limits else 512


class RewardModel:
    """A learned reward: ``score(prompts, completions) -> Tensor[B]``.

    Wraps an ``AutoModelForSequenceClassification`` with ``num_labels=1`` and its tokenizer.
    Inputs are tokenized with :func:`rm_batch_input_ids`, sorted by length into batches,
    right-padded, and scored at the last real token (:func:`reward_at_last_token`) under
    ``torch.inference_mode``; scores come back in input order, float32 on CPU.

    Args:
        model: the sequence-classification model (moved to ``device``).
        tokenizer: its tokenizer; must not have more tokens than the model's embedding.
        max_length: longest input in tokens (text + eos); longer inputs lose their start.
            Defaults to the model's ``max_position_embeddings`` (and the tokenizer's limit).
        device: where to run; defaults to the model's current device.
        name: a label for logs and reports.
        tool: a tool of ``RM_TOOLS`` whose answer the model reads after each completion
            (Themis); None: none.
        feature_head: a ``rewards.feature_head.FeatureHead`` whose term over the
            completion's domain features is added to the backbone's score; None: none.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        name: str | None = None,
        tool: str | None = None,
        feature_head: FeatureHead | None = None,
    ):
        check_vocabulary(tokenizer, model)
        self.tool = None if tool is None else RM_TOOLS.check(tool, "tool")
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer: expected an eos_token; reward models read the score there")
        self.model = model if device is None else model.to(device)
        self.tokenizer = tokenizer
        self.max_length = (
            max_length if max_length is not None else default_max_length(tokenizer, model)
        )
        self.name = name or type(model).__name__
        self.feature_head = feature_head
        if feature_head is not None:
            feature_head.to(self.device)
        # Padding never reaches the score (the attention mask picks the last token), so eos
        # serves as padding for tokenizers that have no pad token.
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_name: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        trust_remote_code: bool = False,
        max_length: int | None = None,
    ) -> RewardModel:
        """Load a reward model and its tokenizer from a directory or a hub name.

        If the directory has a ``goodhart_rm.json`` (written by ``train_reward_model``),
        its ``max_length`` is used unless ``max_length`` is given. A directory sealed with
        checksums (``goodhartlab.artifacts``; every one ``train_reward_model`` saves) is
        verified first. Weights are read from safetensors only. A ``head`` in
        ``goodhart_rm.json`` (an ArmoRM, ``rewards.armo_head``; a PAL model, ``rewards.pal_head``,
        scoring for its saved active persona) replaces the linear score head;
        a ``tool`` there (a tool-augmented model) is called on every completion it scores;
        a ``feature_head`` there (domain-knowledge features) adds its term to every score.

        Raises:
            ValueError: naming the directory, if it is damaged (a file missing, truncated or
                altered since it was sealed) or cannot be loaded as a reward model.
        """
        local = Path(path_or_hub_name)
        tokenizer, model = load_sequence_classifier(
            path_or_hub_name,
            trust_remote_code=trust_remote_code,
            quiet=(saved_head := saved_info(path_or_hub_name).get("head")) is not None,
        )
        if saved_kind(path_or_hub_name) == PAIRWISE_KIND:
            raise ValueError(
                f"{path_or_hub_name}: a pairwise preference model (objective 'pairwise'): it "
                "scores pairs of completions, not one completion; load it with "
                "rewards.pairwise.PairwisePreferenceModel (reward source "
                "'pairwise_preference'); RL optimizes it with algorithm 'nash_mp' only"
            )
        if saved_head is not None:
            if saved_head.get("kind") == "pal":
                from goodhartlab.rewards.pal_head import attach_saved_head
            else:
                from goodhartlab.rewards.armo_head import attach_saved_head

            attach_saved_head(model, local, saved_head)
        if model.config.num_labels != 1:
            raise ValueError(
                f"{path_or_hub_name}: expected a reward model with num_labels=1, "
                f"got num_labels={model.config.num_labels}"
            )
        if max_length is None:
            max_length = _saved_max_length(path_or_hub_name)
        saved_features = saved_info(path_or_hub_name).get("feature_head")
        return cls(
            model,
            tokenizer,
            max_length=max_length,
            device=device,
            name=str(path_or_hub_name),
            tool=saved_info(path_or_hub_name).get("tool"),
            feature_head=None if saved_features is None else FeatureHead.from_spec(saved_features),
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def input_ids(self, prompts: Sequence[str], completions: Sequence[str]) -> list[list[int]]:
        """The token ids this model reads for each (prompt, completion)."""
        return rm_batch_input_ids(
            self.tokenizer, prompts, completions, self.max_length, tool=self.tool
        )

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 64
    ) -> Tensor:
        """Rewards of ``prompt + completion`` for each pair. Shape: (B,), float32, CPU."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        r = self._score(prompts, completions, batch_size=batch_size, return_hidden=False)
        return self._with_features(r, prompts, completions)

    def _with_features(
        self, r: Tensor, prompts: Sequence[str], completions: Sequence[str]
    ) -> Tensor:
        """The backbone's scores plus the feature head's term (unchanged without a head)."""
        if self.feature_head is None:
            return r
        phi = compute_features(self.feature_head.features, prompts, completions)
        with torch.inference_mode():
            return self.feature_head(r.to(self.device), phi).float().cpu()

    __call__ = score

    def score_with_latents(
        self, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 64
    ) -> tuple[Tensor, Tensor]:
        """Rewards and the hidden state the score head reads (the monitor's latents).
        Shapes: (B,), (B, H); float32, CPU."""
        r, h = self._score(prompts, completions, batch_size=batch_size, return_hidden=True)
        return self._with_features(r, prompts, completions), h

    def _score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        batch_size: int,
        return_hidden: bool,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``score_token_ids`` of the inputs; a head with ``group_prompts`` (a PAL head,
        ``rewards.pal_head``) scores each group of rows for its persona, on the group's prompts
        as the head rewrites them, and keeps its active persona."""
        head = getattr(self.model, "score", None)
        group = getattr(head, "group_prompts", None)
        if group is None:
            ids = self.input_ids(prompts, completions)
            return score_token_ids(
                self.model, ids, self.pad_token_id, batch_size=batch_size,
                return_hidden=return_hidden,
            )  # fmt: skip
        if len(prompts) != len(completions):
            raise ValueError(f"expected as many prompts as completions, got {len(prompts)}, "
                             f"{len(completions)}")  # fmt: skip
        n = len(prompts)
        scores = torch.empty(n, dtype=torch.float32)
        hidden: Tensor | None = torch.empty(0, 0) if return_hidden and n == 0 else None
        active = head.active
        try:
            for persona, (rows, texts) in group(prompts).items():
                head.select(persona)
                ids = self.input_ids(texts, [completions[i] for i in rows])
                out = score_token_ids(
                    self.model, ids, self.pad_token_id, batch_size=batch_size,
                    return_hidden=return_hidden,
                )  # fmt: skip
                r, h = out if return_hidden else (out, None)
                scores[torch.as_tensor(rows)] = r
                if h is not None:
                    if hidden is None:
                        hidden = torch.empty(n, h.shape[-1], dtype=torch.float32)
                    hidden[torch.as_tensor(rows)] = h
        finally:
            head.active = active
        return (scores, hidden) if return_hidden else scores

    def __repr__(self) -> str:
        tool = f", tool={self.tool!r}" if self.tool is not None else ""
        if self.feature_head is not None:
            tool += f", features={self.feature_head.features!r}"
        return f"RewardModel(name={self.name!r}, max_length={self.max_length}{tool})"


def score_token_ids(
    model: nn.Module,
    batch_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    *,
    batch_size: int,
    return_hidden: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Rewards for pre-tokenized sequences, batched longest-first. Shape: (B,), float32, CPU.

    Sorting by length keeps padding small; the scores are put back in input order. With
    ``return_hidden``, also the hidden states the head reads. Shape: (B, H).
    """
    n = len(batch_ids)
    scores = torch.empty(n, dtype=torch.float32)
    hidden: Tensor | None = None
    if n == 0:
        return (scores, torch.empty(0, 0)) if return_hidden else scores
    order = sorted(range(n), key=lambda i: len(batch_ids[i]), reverse=True)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                input_ids, mask = collate_rm_inputs([batch_ids[i] for i in idx], pad_token_id)
                extra = {"return_hidden": True} if return_hidden else {}
                out = reward_at_last_token(model, input_ids.to(device), mask.to(device), **extra)
                r, h = out if return_hidden else (out, None)
                scores[torch.as_tensor(idx)] = r.float().cpu()
                if h is not None:
                    if hidden is None:
                        hidden = torch.empty(n, h.shape[-1], dtype=torch.float32)
                    hidden[torch.as_tensor(idx)] = h.float().cpu()
    finally:
        model.train(was_training)
    return (scores, hidden) if return_hidden else scores


#: ``goodhart_rm.json``'s ``kind`` of a pairwise preference model (``rewards.pairwise``).
PAIRWISE_KIND = "pairwise"


def saved_kind(path: str | os.PathLike) -> str:
    """What a reward-model directory holds: its ``goodhart_rm.json`` ``kind`` ("pairwise" for a
    pairwise preference model), else "reward_model" (a scalar reward model, or a hub name)."""
    return str(saved_info(path).get("kind", "reward_model"))


def load_sequence_classifier(
    path_or_hub_name: str | os.PathLike, *, trust_remote_code: bool = False, quiet: bool = False
):
    """``(tokenizer, model)`` of a sequence-classification directory or hub name, weights from
    safetensors only, a sealed directory verified first (``goodhartlab.artifacts``); every
    failure is one ValueError naming the directory. ``quiet``: silence transformers' load
    report (a saved head replaces the linear one)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local = Path(path_or_hub_name)
    if local.is_file():
        raise ValueError(f"{local}: expected a reward-model directory, got a file")
    if (local / MANIFEST).is_file() and (why := verify(local)) is not None:
        raise ValueError(
            f"{local}: the reward-model directory is damaged ({why}); delete it and train "
            "it again (a study retrains a damaged cached proxy by itself)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path_or_hub_name, trust_remote_code=trust_remote_code
        )
        with _quiet_load({} if quiet else None):
            model = AutoModelForSequenceClassification.from_pretrained(
                path_or_hub_name, trust_remote_code=trust_remote_code, use_safetensors=True
            )
    except Exception as e:  # OSError, SafetensorError, JSONDecodeError, ...: one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{path_or_hub_name}: cannot load a reward model ({type(e).__name__}: {first})"
        ) from e
    return tokenizer, model


@contextlib.contextmanager
def _quiet_load(saved_head: dict | None):
    """Silence transformers' load report when a saved head replaces the linear one: it lists
    the head's weights as unexpected and the linear head as missing, which is expected."""
    if saved_head is None:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def saved_info(path: str | os.PathLike) -> dict:
    """The ``goodhart_rm.json`` of a reward-model directory ({} without one)."""
    meta = Path(path) / "goodhart_rm.json"
    if not meta.is_file():
        return {}
    try:
        return json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path}: cannot load a reward model ({meta.name} is not valid JSON: {e})"
        ) from e


def _saved_max_length(path: str | os.PathLike) -> int | None:
    value = saved_info(path).get("max_length")
    return int(value) if value is not None else None
