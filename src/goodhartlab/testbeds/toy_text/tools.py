"""Tools a tool-augmented reward model calls on toy_text (Themis, Li et al. 2024).

Themis ("Tool-Augmented Reward Modeling", Li et al. 2024, arXiv:2310.01045) lets a reward
model call external tools (a calculator, a search engine, ...) and reads their answers
before it scores. In goodhart-lab a tool is a deterministic function
``tool(prompt, completion) -> answer``: the reward model reads
``prompt + completion + answer`` (``rewards.reward_model.rm_batch_input_ids``), at training
and at scoring alike, and a saved reward model records its tool's name, so a reloaded proxy
calls it too.

``toy_text_counter`` counts and looks up what the text shows, not what the gold concludes:

    answer = " :" + "," * min(sentences, 8)              sentences (each "." or a fragment)
           + " :" + "," * min(repeated, 4)               sentences beyond a first copy
           + " :" + " ".join(the product's parts mentioned, catalogue order, once each)
           + " :" + " ".join(other products' parts mentioned, once each, at most 4)
           + " :" + "," * min(top mentions, 6)           mentions of the most-mentioned noun

The catalogue lookup (``language.PRODUCTS``) is public: the prompt names the product. The
tool knows nothing of the hidden plausibility table (``language.fits``), of polarity, of
grammar or of the gold's weights and thresholds: it is a counter, not the gold. Counts are
unary runs of "," and field boundaries ":", both whole tokens of the toy_text tokenizer,
so an answer costs at most ~32 tokens (the RM's 128-token inputs keep it whole; longer
inputs lose the prompt's start first). Bump ``TOOLS_VERSION`` on any change of an answer.

Measured (``benchmarks/rm_variants.py --variants bradley_terry themis``, 3,000 pairs with 25 %
flipped labels, 3 seeds, 64 prompts x 256 base samples): clean held-out accuracy 0.669 ±
0.012 against Bradley-Terry's 0.650 ± 0.007; best-of-16 gold 1.052 ± 0.263 (BT 0.725 ±
0.450; paired over prompts +0.327 ± 0.061); best-of-256 gold 0.996 ± 1.133 (BT 0.379 ±
0.761; paired +0.617 ± 0.370). The lookup alone (``toy_text_lookup``, variant
``themis_lookup``): accuracy 0.674 ± 0.043, best-of-16 0.873 ± 0.156 (paired +0.148 ±
0.069), best-of-256 0.899 ± 0.511 (paired +0.520 ± 0.425): the counts add most at n = 16.
"""

from __future__ import annotations

from collections import Counter

from goodhartlab.registry import RM_TOOLS
from goodhartlab.testbeds.toy_text.language import GENERIC_NOUNS, PRODUCTS, parse_prompt

TOOLS_VERSION = "toy_text-tools-v1"

_PART_OWNER = {q: p for p, parts in PRODUCTS.items() for q in parts}
_NOUNS = set(_PART_OWNER) | set(GENERIC_NOUNS)

#: Caps of the unary counts (sentences, repeated sentences, top mentions) and of the list of
#: other products' parts.
CAPS = {"sentences": 8, "repeated": 4, "off": 4, "top_mentions": 6}


def toy_text_counts(prompt: str, completion: str) -> dict[str, object]:
    """What ``toy_text_counter`` reports, uncapped: sentences, repeated, parts (this
    product's, catalogue order), off (other products' parts, first-mention order),
    top_mentions."""
    product = parse_prompt(prompt).product
    words = completion.split()
    sentences: list[tuple[str, ...]] = []
    cur: list[str] = []
    for w in words:
        if w == ".":
            sentences.append(tuple(cur))
            cur = []
        else:
            cur.append(w)
    if cur:
        sentences.append(tuple(cur))
    seen = Counter(sentences)
    mentions = Counter(w for w in words if w in _NOUNS)
    own = [q for q in PRODUCTS[product] if q in mentions]
    off = [w for w in dict.fromkeys(words) if w in _PART_OWNER and _PART_OWNER[w] != product]
    return {
        "sentences": len(sentences),
        "repeated": sum(c - 1 for c in seen.values()),
        "parts": own,
        "off": off,
        "top_mentions": max(mentions.values(), default=0),
    }


@RM_TOOLS.register(
    "toy_text_counter",
    paper="Li et al. 2024, Tool-Augmented Reward Modeling (Themis), arXiv:2310.01045",
    version=TOOLS_VERSION,
    testbed="toy_text",
)
def toy_text_counter(prompt: str, completion: str) -> str:
    """Counts of sentences, repeats and noun mentions, and a catalogue lookup of the parts
    mentioned (toy_text)."""
    c = toy_text_counts(prompt, completion)
    return (
        " :" + " ," * min(c["sentences"], CAPS["sentences"])
        + " :" + " ," * min(c["repeated"], CAPS["repeated"])
        + " :" + "".join(f" {q}" for q in c["parts"])
        + " :" + "".join(f" {q}" for q in c["off"][: CAPS["off"]])
        + " :" + " ," * min(c["top_mentions"], CAPS["top_mentions"])
    )  # fmt: skip


@RM_TOOLS.register(
    "toy_text_lookup",
    paper="Li et al. 2024, Tool-Augmented Reward Modeling (Themis), arXiv:2310.01045",
    version=TOOLS_VERSION,
    testbed="toy_text",
)
def toy_text_lookup(prompt: str, completion: str) -> str:
    """The catalogue lookup of ``toy_text_counter`` alone (no counts): this product's parts
    mentioned, then other products' (an ablation of the counter)."""
    c = toy_text_counts(prompt, completion)
    return (
        " :" + "".join(f" {q}" for q in c["parts"])
        + " :" + "".join(f" {q}" for q in c["off"][: CAPS["off"]])
    )  # fmt: skip
