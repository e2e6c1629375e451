"""``goodhart serve``: an HTTP reward server that speaks OpenRLHF's remote reward protocol,
with the proxies and the monitor inside.

OpenRLHF (``--reward.remote_url http://HOST:PORT/get_reward``; ``openrlhf/utils/agent.py``
``_fetch_rewards_via_http``) POSTs ``{"query": [texts], "prompts": [texts], "labels":
[...]}`` and reads ``rewards``, ``scores`` and ``extra_logs`` from the JSON reply, as its
reference server ``openrlhf/cli/serve_rm.py`` sends them: lists of one value per query
(``extra_logs``: ``{name: [value per query]}``, the same names in every reply). Here the
rewards (and ``scores``) are the proxy's, and ``extra_logs`` hold the monitor's reading of
the last closed evaluation point (``goodhart/<detector>``, ``goodhart/alarm``,
``goodhart/could_tell``; NaN, written as JSON ``NaN`` as Python's ``json`` and OpenRLHF's
client read it, where it could not tell). Routes:

- ``POST /get_reward``: the protocol above (400 with a message for a body that is not it);
- ``GET /monitor``: the monitor's summary and last reading (NaN as null);
- ``GET /health``: ``{"status": "ok"}``.

Built on Starlette, served by uvicorn (the ``serve`` extra: ``pip install goodhart-lab[serve]``).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from goodhartlab.integrations.openrlhf import openrlhf_reply
from goodhartlab.integrations.scoring import MonitoredScorer

__all__ = ["build_app", "run_server"]

logger = logging.getLogger("goodhartlab.integrations")


def _clean(x: Any) -> Any:
    """NaN and infinities as null (for strict JSON readers)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def build_app(scorer: MonitoredScorer):
    """The Starlette application serving ``scorer``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def reply(body: dict, status: int = 200) -> Response:
        # OpenRLHF's reader (json.loads) takes NaN; Starlette's JSONResponse refuses it.
        return Response(json.dumps(body), status_code=status, media_type="application/json")

    def error(msg: str) -> Response:
        return JSONResponse({"error": msg}, status_code=400)

    async def get_reward(request: Request) -> Response:
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            return error('the body is not JSON; expected {"query": [...], "prompts": [...]}')
        if not isinstance(data, dict) or "query" not in data:
            return error('expected a JSON object with "query" (a list of texts)')
        try:
            from starlette.concurrency import run_in_threadpool

            scores, metrics = await run_in_threadpool(
                openrlhf_reply, scorer, data["query"], data.get("prompts"), data.get("labels")
            )
        except ValueError as e:
            return error(str(e))
        n = len(scores)
        rewards = [math.nan if s is None else float(s) for s in scores]
        extra = {k: [float(v)] * n for k, v in metrics.items()}
        return reply({"rewards": rewards, "scores": list(rewards), "extra_logs": extra})

    async def monitor(request: Request) -> Response:
        last = scorer.last
        body = {
            **scorer.feed.summary(),
            "last": None
            if last is None
            else {"step": last.step, "verdict": last.verdict, "rows": last.rows,
                  "scores": last.scores, "bad_rows": dict(last.bad_rows)},
        }  # fmt: skip
        return JSONResponse(_clean(body))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/get_reward", get_reward, methods=["POST"]),
            Route("/monitor", monitor, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def run_server(scorer: MonitoredScorer, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Serve until interrupted (uvicorn)."""
    import uvicorn

    uvicorn.run(build_app(scorer), host=host, port=port, log_level="info")
