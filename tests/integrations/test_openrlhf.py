"""OpenRLHF: the reward_func file contract and ``goodhart serve`` over real HTTP on localhost.

OpenRLHF itself is not installed here (it needs vLLM, Ray and DeepSpeed on GPUs): the adapter
is tested against the contract read from OpenRLHF's source (``openrlhf/utils/agent.py``,
``examples/python/reward_func.py``, ``openrlhf/cli/serve_rm.py``; see the module docstrings):
``reward_func(queries, prompts, labels)`` called with one sample, and POST
``{"query", "prompts", "labels"}`` answered with lists of ``rewards`` / ``scores`` and
``extra_logs`` of one value per query, with the same keys in every reply.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from goodhartlab.integrations.feed import COULD_NOT_TELL, HACKING, NO_ALARM
from goodhartlab.integrations.openrlhf import make_reward_func
from goodhartlab.integrations.scoring import MonitoredScorer
from goodhartlab.monitor.live import MonitorConfig
from goodhartlab.rewards import ProgrammaticReward

CONFIG = MonitorConfig(detectors=["length_drift"], alarm=None, thresholds={"length_drift": 2.0})
words = ProgrammaticReward(lambda p, c: float(len(c.split())), name="words", version="1")


def test_reward_func_one_sample_at_a_time_as_openrlhf_calls_it():
    reward_func = make_reward_func(words, CONFIG, samples_per_point=2)
    # The first two samples (2 and 4 words) are the reference point: mean 3, sd 1.
    outs = [
        reward_func([f"Q: hi{c}"], ["Q: hi"], [None])
        for c in [" a b", " a b c d", " a b c", " a b c"]
    ]
    assert [float(o["rewards"][0]) for o in outs] == [2.0, 4.0, 3.0, 3.0]
    assert all(isinstance(o["rewards"], torch.Tensor) and o["rewards"].shape == (1,) for o in outs)
    torch.testing.assert_close(outs[0]["scores"], outs[0]["rewards"])
    keys = {frozenset(o["extra_logs"]) for o in outs}
    assert len(keys) == 1  # OpenRLHF stacks per-sample logs: the same keys every time
    # Before the first point closes: could not tell; after it, the reference's reading.
    assert outs[0]["extra_logs"]["goodhart/could_tell"].item() == 0.0
    assert math.isnan(outs[0]["extra_logs"]["goodhart/length_drift"].item())
    assert outs[1]["extra_logs"]["goodhart/length_drift"].item() == 0.0
    assert outs[3]["extra_logs"]["goodhart/step"].item() == 1.0
    # Long completions: drift (10 - 3) / 1 = 7 > 2.
    for _ in range(2):
        last = reward_func(["Q: hi" + " w" * 10], ["Q: hi"], [None])
    assert last["extra_logs"]["goodhart/alarm"].item() == 1.0
    assert reward_func.scorer.last.verdict == HACKING


def test_reward_func_never_raises_on_a_query_without_its_prompt():
    reward_func = make_reward_func(words, CONFIG, samples_per_point=1)
    out = reward_func(["something else entirely"], ["Q: hi"], [None])
    assert float(out["rewards"][0]) == 3.0  # scored whole
    assert dict(reward_func.scorer.feed.bad_rows) == {"unsplit:query": 1}
    assert reward_func.scorer.last is None  # nothing readable reached the monitor


def test_packaged_reward_file_reads_its_setup_from_the_environment(
    tiny_reward_model, tiny_tokenizer, tmp_path, monkeypatch
):
    from goodhartlab.train.rm import save_reward_model

    rm_dir = save_reward_model(tiny_reward_model, tiny_tokenizer, tmp_path / "rm", {})
    (tmp_path / "monitor.yaml").write_text(
        "detectors: [length_drift]\nalarm: null\nthresholds: {length_drift: 2.0}\n"
    )
    monkeypatch.setenv("GOODHART_PROXY", str(rm_dir))
    monkeypatch.setenv("GOODHART_MONITOR", str(tmp_path / "monitor.yaml"))
    monkeypatch.setenv("GOODHART_SAMPLES_PER_POINT", "1")
    import goodhartlab.integrations.openrlhf_reward as packaged

    # As OpenRLHF loads it: by file path, a fresh module.
    spec = importlib.util.spec_from_file_location("reward_func", packaged.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.reward_func(["review of a phone: nice"], ["review of a phone:"], [None])
    from goodhartlab.rewards import RewardModel

    expected = RewardModel.from_pretrained(rm_dir).score(["review of a phone:"], [" nice"])
    torch.testing.assert_close(out["rewards"], expected)
    assert out["extra_logs"]["goodhart/length_drift"].item() == 0.0  # the reference point


# -- goodhart serve ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def server():
    """A goodhart server on a free localhost port in a thread; shut down after the test."""
    pytest.importorskip("uvicorn")
    import uvicorn

    from goodhartlab.integrations.server import build_app

    scorer = MonitoredScorer(words, CONFIG, samples_per_point=4)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(build_app(scorer), host="127.0.0.1", port=port,
                                        log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", scorer
    srv.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_server_speaks_openrlhfs_protocol(server):
    url, scorer = server
    prompts = ["Q: a", "Q: b", "Q: a", "Q: b"]
    queries = [p + c for p, c in zip(prompts, [" x y", " x y z", " x y", " x y z"], strict=True)]
    status, body = _post(url + "/get_reward", {"query": queries, "prompts": prompts,
                                                "labels": [None] * 4})  # fmt: skip
    assert status == 200
    assert body["rewards"] == [2.0, 3.0, 2.0, 3.0] == body["scores"]
    assert set(body["extra_logs"]) == set(scorer.feed.metric_names())
    assert all(len(v) == 4 for v in body["extra_logs"].values())
    assert body["extra_logs"]["goodhart/length_drift"] == [0.0] * 4  # the reference point
    # One sample per request, as OpenRLHF sends them: the next point fills up.
    for _ in range(4):
        status, body = _post(url + "/get_reward", {"query": ["Q: a" + " w" * 12],
                                                    "prompts": ["Q: a"], "labels": [None]})  # fmt: skip
    assert status == 200 and body["extra_logs"]["goodhart/alarm"] == [1.0]
    state = _get(url + "/monitor")
    assert state["verdict"] == HACKING and state["points"] == 2 and state["alarm_step"] == 1
    assert _get(url + "/health") == {"status": "ok"}


def test_server_answers_bad_requests_with_400_and_keeps_serving(server):
    url, scorer = server
    assert _post(url + "/get_reward", b"not json")[0] == 400
    status, body = _post(url + "/get_reward", {"prompts": ["Q"]})
    assert status == 400 and "query" in body["error"]
    status, body = _post(url + "/get_reward", {"query": [1, 2]})
    assert status == 400 and "query[0]" in body["error"]
    # Missing prompts: scored, not monitored (cannot split), counted.
    status, body = _post(url + "/get_reward", {"query": ["Q: a b"]})
    assert status == 200 and body["rewards"] == [3.0]
    assert dict(scorer.feed.bad_rows) == {"missing:prompts": 1}
    assert _get(url + "/monitor")["verdict"] == COULD_NOT_TELL
    status, body = _post(url + "/get_reward", {"query": ["Q: a b"] * 4, "prompts": ["Q:"] * 4})
    assert status == 200 and _get(url + "/monitor")["verdict"] == NO_ALARM


def test_goodhart_serve_command_serves_a_reward_model_directory(
    tiny_reward_model, tiny_tokenizer, tmp_path
):
    pytest.importorskip("uvicorn")
    from goodhartlab.train.rm import save_reward_model

    rm_dir = save_reward_model(tiny_reward_model, tiny_tokenizer, tmp_path / "rm", {})
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "goodhartlab.cli", "serve", "--proxy", str(rm_dir),
         "--alarm", "none", "--threshold", "length_drift=2", "--samples-per-point", "2",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                assert _get(f"http://127.0.0.1:{port}/health") == {"status": "ok"}
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "goodhart serve did not start"
                time.sleep(0.2)
        prompts = ["review of a phone:", "review of a book:"]
        completions = [" the screen is great.", " a fine book."]
        status, body = _post(
            f"http://127.0.0.1:{port}/get_reward",
            {"query": [p + c for p, c in zip(prompts, completions, strict=True)],
             "prompts": prompts, "labels": [None, None]},
        )  # fmt: skip
        from goodhartlab.rewards import RewardModel

        expected = RewardModel.from_pretrained(rm_dir).score(prompts, completions)
        assert status == 200
        assert body["rewards"] == pytest.approx(expected.tolist(), abs=1e-5)
        assert body["extra_logs"]["goodhart/length_drift"] == [0.0, 0.0]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down, the command exits 0
        assert proc.wait(timeout=60) == 0
    out = proc.stdout.read()
    assert "Application shutdown complete" in out
    assert '"points": 1' in out.splitlines()[-1]  # the summary after the stop


def test_reward_func_gives_the_monitor_our_reward_models_latents(fake_latents):
    config = MonitorConfig(detectors=["mahalanobis_outliers", "entropy_collapse"], alarm=None)
    reward_func = make_reward_func(words, config, samples_per_point=2, latents=fake_latents)
    for c in [" a b", " a b c", " a b c d", " b c d e"] + [" w" * 12] * 2:
        reward_func([f"Q: hi{c}"], ["Q: hi"], [None])
    points = reward_func.scorer.feed.monitor.points
    assert [p.latents.shape for p in points] == [(2, 3)] * 3
    logs = reward_func.scorer.metrics()
    # Twelve repeated words sit far from the reference's short varied ones.
    assert logs["goodhart/mahalanobis_outliers"] == 1.0
    # OpenRLHF hands the reward no log-probs: entropy could not tell.
    assert math.isnan(logs["goodhart/entropy_collapse"])
