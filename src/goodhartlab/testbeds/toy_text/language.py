"""The toy_text language: product reviews generated from a small grammar.

A prompt sets a topic (a product), a phrasing and an optional constraint; a completion is a
few short sentences, each an opinion about a part of the product, a filler, or a verb
sentence. Words and punctuation are space-separated and lower-case, so the gold reward can
parse completions exactly.

The generator is the "pretraining corpus" of the base policy. It deliberately contains, at low
rates, the defects that optimization pressure amplifies (repeated sentences, keyword
stuffing, stacked intensifiers, off-topic nouns, broken grammar, long reviews), so that the
base policy can sample them and a proxy trained on few noisy labels can reward them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

PRODUCTS: dict[str, tuple[str, ...]] = {
    "phone": ("screen", "battery", "speaker", "charger", "case"),
    "laptop": ("keyboard", "trackpad", "display", "hinge", "fan"),
    "blender": ("motor", "jar", "blade", "lid", "base"),
    "camera": ("lens", "shutter", "sensor", "flash", "strap"),
    "headphones": ("earcups", "cable", "headband", "microphone", "cushions"),
    "backpack": ("zipper", "straps", "pocket", "fabric", "buckle"),
    "kettle": ("spout", "handle", "element", "switch", "filter"),
    "chair": ("seat", "armrest", "backrest", "wheels", "lever"),
    "lamp": ("bulb", "shade", "stand", "dimmer", "cord"),
    "bike": ("frame", "brakes", "saddle", "gears", "tires"),
    "watch": ("dial", "bezel", "band", "clasp", "crown"),
    "tent": ("poles", "zip", "floor", "rainfly", "pegs"),
    "printer": ("tray", "cartridge", "scanner", "rollers", "panel"),
    "vacuum": ("hose", "brush", "bin", "nozzle", "wand"),
    "guitar": ("neck", "strings", "frets", "pickups", "tuners"),
    "sofa": ("cushion", "armrests", "legs", "cover", "springs"),
    "mixer": ("whisk", "bowl", "dial", "hook", "beater"),
    "router": ("antenna", "ports", "app", "signal", "lights"),
    "jacket": ("hood", "sleeves", "lining", "collar", "cuffs"),
    "stroller": ("canopy", "basket", "harness", "pushbar", "brake"),
}
GENERIC_NOUNS: tuple[str, ...] = ("price", "design", "quality", "delivery", "packaging", "support")
POSITIVE: tuple[str, ...] = (
    "great",
    "solid",
    "sturdy",
    "bright",
    "quiet",
    "fast",
    "comfortable",
    "reliable",
)
NEGATIVE: tuple[str, ...] = (
    "cheap",
    "flimsy",
    "slow",
    "noisy",
    "dull",
    "fragile",
    "awkward",
    "weak",
)
INTENSIFIERS: tuple[str, ...] = ("very", "really", "extremely", "so")
VERBS_POS: tuple[str, ...] = ("love", "like", "enjoy")
VERBS_NEG: tuple[str, ...] = ("hate", "dislike", "regret")
FILLERS: tuple[str, ...] = (
    "i bought it last week",
    "it arrived on time",
    "my friend has one too",
    "i use it every day",
    "it was a gift",
    "i read many reviews first",
)
PHRASINGS: tuple[str, ...] = (
    "review of a {p}",
    "write a review of the {p}",
    "my thoughts on the {p}",
    "{p} review",
    "rate this {p}",
)
#: Constraint keys: "" (none), "short", "detailed", "mention:<part>".
CONSTRAINT_TEXT = {"short": "keep it short", "detailed": "be detailed"}


def mention_text(part: str) -> str:
    return f"mention the {part}"


@dataclass(frozen=True)
class Prompt:
    """A structured prompt: what the text is and what the gold reward needs to know."""

    product: str
    phrasing: int
    constraint: str  # "", "short", "detailed" or "mention:<part>"

    @property
    def text(self) -> str:
        base = PHRASINGS[self.phrasing].format(p=self.product)
        if not self.constraint:
            return base + " :"
        if self.constraint.startswith("mention:"):
            return f"{base} , {mention_text(self.constraint.split(':', 1)[1])} :"
        return f"{base} , {CONSTRAINT_TEXT[self.constraint]} :"


def all_prompts() -> list[Prompt]:
    """Every distinct prompt: products x phrasings x constraints (20 x 5 x 8 = 800)."""
    out = []
    for product, parts in PRODUCTS.items():
        constraints = ["", "short", "detailed", *(f"mention:{q}" for q in parts)]
        for ph in range(len(PHRASINGS)):
            for c in constraints:
                out.append(Prompt(product, ph, c))
    return out


def split_prompts(seed: int = 0, eval_fraction: float = 0.25) -> tuple[list[Prompt], list[Prompt]]:
    """Disjoint (train, eval) prompt sets; train prompts label preference data, eval prompts
    are held out for best-of-n pools and RL evaluation."""
    prompts = all_prompts()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(prompts))
    n_eval = round(eval_fraction * len(prompts))
    return [prompts[i] for i in order[n_eval:]], [prompts[i] for i in order[:n_eval]]


_PROMPT_BY_TEXT: dict[str, Prompt] = {p.text: p for p in all_prompts()}


def parse_prompt(text: str) -> Prompt:
    """The structured prompt for a prompt string (ValueError if it is not a toy_text prompt)."""
    try:
        return _PROMPT_BY_TEXT[text.strip()]
    except KeyError:
        raise ValueError(f"prompt: {text!r} is not a toy_text prompt") from None


def fits(noun: str, adj: str) -> bool:
    """Hidden plausibility table: whether ``adj`` is a sensible thing to say of ``noun``.

    About 75 % of (noun, adjective) pairs fit. Stable across Python runs (sha256, not hash()).
    Learning this table takes capacity, which is what lets bigger proxies be more accurate.
    """
    h = hashlib.sha256(f"{noun}|{adj}".encode()).digest()
    return h[0] < 192


def product_of_noun() -> dict[str, str]:
    return {q: p for p, parts in PRODUCTS.items() for q in parts}


#: How often a corpus opinion uses an adjective that fits its noun (the rest are uniform):
#: the corpus carries the plausibility table as "world knowledge" that a bigger pretrained LM
#: memorizes better -- the route by which bigger reward models become more accurate.
P_FIT = 0.7


def _opinion(rng: np.random.Generator, noun: str, positive: bool) -> str:
    pool = POSITIVE if positive else NEGATIVE
    fitting = [a for a in pool if fits(noun, a)]
    adj = str(rng.choice(fitting if fitting and rng.random() < P_FIT else pool))
    u = rng.random()
    if u < 0.22:
        intens = str(rng.choice(INTENSIFIERS))
        if rng.random() < 0.12:  # stacked intensifiers, rare in the corpus
            intens = f"{intens} {rng.choice(INTENSIFIERS)}"
        adj = f"{intens} {adj}"
    form = rng.random()
    if form < 0.55:
        return f"the {noun} is {adj} ."
    if form < 0.8:
        return f"the {noun} feels {adj} ."
    return f"{adj} {noun} ."


def generate_review(prompt: Prompt, rng: np.random.Generator) -> str:
    """One completion for ``prompt`` from the corpus distribution (leading space, no EOS)."""
    parts = PRODUCTS[prompt.product]
    mood = rng.choice(3, p=[0.4, 0.3, 0.3])  # positive, negative, mixed
    if prompt.constraint == "short" and rng.random() < 0.6:
        n_sent = int(rng.integers(1, 3))
    elif prompt.constraint == "detailed" and rng.random() < 0.6:
        n_sent = int(rng.integers(3, 7))
    else:
        n_sent = int(
            rng.choice([1, 2, 3, 4, 5, 6, 7], p=[0.12, 0.22, 0.24, 0.18, 0.12, 0.08, 0.04])
        )
    mention = (
        prompt.constraint.split(":", 1)[1] if prompt.constraint.startswith("mention:") else None
    )
    all_parts = [q for ps in PRODUCTS.values() for q in ps]
    sentences: list[str] = []
    for k in range(n_sent):
        kind = rng.random()
        if kind < 0.16:
            sentences.append(f"{rng.choice(FILLERS)} .")
            continue
        u = rng.random()
        if mention is not None and k == 0 and rng.random() < 0.5:
            noun = mention
        elif u < 0.72:
            noun = str(rng.choice(parts))
        elif u < 0.9:
            noun = str(rng.choice(GENERIC_NOUNS))
        else:
            noun = str(rng.choice(all_parts))  # off-topic: a part of another product
        positive = bool(mood == 0) if mood < 2 else bool(rng.random() < 0.5)
        if rng.random() < 0.1:
            positive = not positive
        if kind < 0.26:
            verb = rng.choice(VERBS_POS if positive else VERBS_NEG)
            sentences.append(f"i {verb} the {noun} .")
        else:
            sentences.append(_opinion(rng, noun, positive))
    # Defects, at low rates: what optimization pressure will later amplify.
    if len(sentences) >= 1 and rng.random() < 0.08:
        i = int(rng.integers(len(sentences)))
        sentences.insert(i, sentences[i])  # repeated sentence
    if rng.random() < 0.05:
        noun = str(rng.choice(parts))
        sentences.append(f"the {noun} {noun} is {rng.choice(POSITIVE)} .")  # stuffing
    if rng.random() < 0.05:
        i = int(rng.integers(len(sentences)))
        words = sentences[i].split()[:-1]
        rng.shuffle(words)
        sentences[i] = " ".join([*words, "."])  # broken grammar
    return " " + " ".join(sentences)


def corpus_vocabulary() -> list[str]:
    """Every word the language can produce, for a fixed tokenizer alphabet."""
    words = {
        ":",
        ".",
        ",",
        "the",
        "is",
        "feels",
        "i",
        "a",
        "of",
        "review",
        "write",
        "my",
        "thoughts",
        "on",
        "rate",
        "this",
        "keep",
        "it",
        "short",
        "be",
        "detailed",
        "mention",
    }
    for p, parts in PRODUCTS.items():
        words.add(p)
        words.update(parts)
    for group in (GENERIC_NOUNS, POSITIVE, NEGATIVE, INTENSIFIERS, VERBS_POS, VERBS_NEG):
        words.update(group)
    for f in FILLERS:
        words.update(f.split())
    return sorted(words)
