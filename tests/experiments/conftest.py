"""Fixtures of the experiments tests."""

from __future__ import annotations

import sys
import types

import pytest
import torch


class FakeRay(types.ModuleType):
    """The part of Ray's API that dispatch uses, run in this process: ``.remote`` queues a
    call, ``wait`` runs the oldest queued one, so the order is deterministic."""

    def __init__(self):
        super().__init__("ray")
        self.initialized = False
        self.calls: list = []
        self.queue: list = []
        self.max_in_flight = 0
        self.events: list = []

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.initialized = True
        self.events.append(("init", kwargs))

    def shutdown(self):
        self.initialized = False
        self.events.append(("shutdown",))

    def remote(self, **options):
        fake = self

        def decorate(fn):
            class Remote:
                def remote(self, *args):
                    ref = object()
                    fake.calls.append((options, args))
                    fake.queue.append((ref, fn, args))
                    fake.max_in_flight = max(fake.max_in_flight, len(fake.queue))
                    return ref

            return Remote()

        return decorate

    def wait(self, refs, num_returns=1):
        ref, fn, args = next(item for item in self.queue if item[0] in refs)
        self.queue = [item for item in self.queue if item[0] is not ref]
        try:
            self.results = getattr(self, "results", {})
            self.results[id(ref)] = ("ok", fn(*args))
        except Exception as e:
            self.results[id(ref)] = ("error", e)
        return [ref], [r for r in refs if r is not ref]

    def get(self, ref):
        kind, value = self.results.pop(id(ref))
        if kind == "error":
            raise value
        return value

    def cancel(self, ref):
        self.events.append(("cancel",))


@pytest.fixture
def fake_ray(monkeypatch):
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    # _in_worker sets these and torch's threads in the worker: here that is this process.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    yield ray
    torch.set_num_threads(threads)
