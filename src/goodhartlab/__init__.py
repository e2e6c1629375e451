"""goodhart-lab: measure and mitigate reward hacking."""

__version__ = "0.1.0"
