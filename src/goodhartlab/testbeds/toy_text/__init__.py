"""The toy_text testbed: a generated review language whose gold reward is known."""

from goodhartlab.testbeds.toy_text.gold import GOLD_VERSION, ToyTextGold, gold_features
from goodhartlab.testbeds.toy_text.testbed import LANGUAGE_VERSION, ToyText, ToyTextConfig

__all__ = [
    "GOLD_VERSION",
    "LANGUAGE_VERSION",
    "ToyText",
    "ToyTextConfig",
    "ToyTextGold",
    "gold_features",
]
