"""Which reward-model benchmark predicts downstream gold? (issue 15, item 3)

The study is packaged as ``goodhart rm-downstream`` (``goodhartlab.experiments.rm_downstream``);
this runs it with the settings of BENCHMARKS.md ("Benchmark versus downstream"):

    python benchmarks/rm_downstream.py [--out rm_downstream]

One torch thread; about 16 minutes of one core with the caches built (estimated from the
measured rows and RL runs of BENCHMARKS.md; the first run also trains and caches the proxies).
"""

from __future__ import annotations

import sys

from goodhartlab.cli import main

if __name__ == "__main__":
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "rm_downstream"
    sys.exit(main(["--threads", "1", "rm-downstream", "--out", out]))
