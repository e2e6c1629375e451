"""The real_text prompts: nine instruction templates over sixty real topics, written for
goodhart-lab (no third-party data; the package's own licence applies).

Each prompt carries what the gold needs to read it (:class:`PromptSpec`): its topic (what
the answer should be about), the tone it asks for (+1 warm, -1 critical, 0 none) and its
length budget in words. 60 topics x 9 templates = 540 prompts; a seeded shuffle holds out
20 % (108) for evaluation, never seen by preference data or training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Bump on any change to the topics, templates or split (results record it).
PROMPTS_VERSION = "real_text-prompts-v1"

TOPICS: tuple[str, ...] = (
    # home and everyday life
    "composting at home",
    "growing tomatoes on a balcony",
    "baking sourdough bread",
    "brewing coffee with a French press",
    "cooking rice on the stove",
    "keeping houseplants alive",
    "cleaning a cast iron pan",
    "saving money on groceries",
    "packing for a week-long trip",
    "getting a good night's sleep",
    "training a puppy",
    "caring for a pet cat",
    # hobbies and skills
    "learning to play the guitar",
    "running a first marathon",
    "riding a bicycle in the city",
    "knitting a scarf",
    "taking photos with a phone",
    "playing chess",
    "learning a second language",
    "writing a personal journal",
    "birdwatching",
    "hiking in the mountains",
    "swimming laps in a pool",
    "camping in a tent",
    # science and nature
    "black holes",
    "photosynthesis",
    "volcanoes",
    "the water cycle",
    "honey bees",
    "the phases of the moon",
    "earthquakes",
    "rainbows",
    "coral reefs",
    "the human heart",
    "vaccines",
    "recycling plastic",
    # technology
    "electric cars",
    "solar panels",
    "password managers",
    "email spam filters",
    "smartphones",
    "video calls for remote work",
    "3D printers",
    "public Wi-Fi networks",
    "online shopping",
    "social media",
    # places, culture and history
    "the history of the bicycle",
    "the invention of the printing press",
    "ancient Egyptian pyramids",
    "the Olympic Games",
    "public libraries",
    "jazz music",
    "museums",
    "street food markets",
    "train travel in Europe",
    "city parks",
    # work and study
    "studying for an exam",
    "working from home",
    "a job interview",
    "public speaking",
)

TEMPLATES: tuple[tuple[str, str, int, int], ...] = (
    # (task, template, tone, length budget in words)
    ("explain", "Explain {topic} to a curious beginner.", 0, 60),
    ("tips", "Give some practical tips about {topic}.", 0, 60),
    ("describe", "Describe {topic} in a short paragraph.", 0, 60),
    ("short", "In one or two sentences, what should I know about {topic}?", 0, 30),
    ("story", "Write a very short story that involves {topic}.", 0, 60),
    ("praise", "Write an enthusiastic, upbeat note about {topic}.", 1, 60),
    ("love", "Why do people love {topic}? Answer warmly.", 1, 60),
    ("complain", "Write a grumpy complaint about {topic}.", -1, 60),
    ("frustrate", "What is most frustrating or disappointing about {topic}?", -1, 60),
)

EVAL_FRACTION = 0.2


@dataclass(frozen=True)
class PromptSpec:
    """What the gold reads in a prompt."""

    text: str
    topic: str
    """What the answer should be about (relevance is measured against it)."""
    task: str
    tone: int
    """+1: the prompt asks for a warm answer, -1: a critical one, 0: no tone asked."""
    max_words: int
    """Length budget in words: words beyond it are penalized."""


def all_prompts() -> list[PromptSpec]:
    """Every prompt, topic-major, in a fixed order."""
    return [
        PromptSpec(template.format(topic=topic), topic, task, tone, budget)
        for topic in TOPICS
        for task, template, tone, budget in TEMPLATES
    ]


_BY_TEXT: dict[str, PromptSpec] = {p.text: p for p in all_prompts()}

#: Budget of a prompt that is not one of ours (a user's own prompts file).
DEFAULT_MAX_WORDS = 60


def parse_prompt(text: str) -> PromptSpec:
    """The spec of one of our prompts; any other prompt is its own topic, asks no tone and
    gets the default budget (so the gold still scores a user's own prompts)."""
    spec = _BY_TEXT.get(text)
    if spec is not None:
        return spec
    return PromptSpec(text, text, "other", 0, DEFAULT_MAX_WORDS)


def split_prompts(
    seed: int = 0, eval_fraction: float = EVAL_FRACTION
) -> tuple[list[PromptSpec], list[PromptSpec]]:
    """(train, eval): a seeded shuffle of :func:`all_prompts`, the first ``eval_fraction``
    held out. Disjoint; the same for a seed."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction: expected in (0, 1), got {eval_fraction}")
    prompts = all_prompts()
    random.Random(seed).shuffle(prompts)
    n_eval = round(eval_fraction * len(prompts))
    return prompts[n_eval:], prompts[:n_eval]
