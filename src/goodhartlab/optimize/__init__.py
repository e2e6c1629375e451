"""The optimizers against a proxy reward: best-of-n (pools, score caches, the study), RL (PPO /
GRPO / RLOO) and direct alignment (DPO-family, offline and online)."""
