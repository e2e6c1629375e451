"""Nelder-Mead as ask/tell: scipy's closed-loop simplex search driven one evaluation at a time.

``scipy.optimize.minimize(method="Nelder-Mead")`` (Nelder & Mead 1965, "A simplex method for
function minimization", Comput. J. 7(4); with ``adaptive=True`` the dimension-dependent
coefficients of Gao & Han 2012, "Implementing the Nelder-Mead simplex algorithm with adaptive
parameters", Comput. Optim. Appl. 51) calls its objective itself. A search whose evaluations are
stretches of one RL run (NM-PPO: Moskovitz et al. 2023, arXiv 2310.04373) needs the inverse:
:meth:`NelderMeadAskTell.ask` gives the point to evaluate next, :meth:`~NelderMeadAskTell.tell`
reports its value. The simplex logic stays scipy's: ``minimize`` runs in a worker thread whose
objective hands each point out and blocks until its value comes back, so the two threads take
turns and the sequence of points is the one the closed loop would produce on the same values.

Coefficients: reflection 1, expansion 2, contraction 1/2, shrink 1/2 (Nelder & Mead's; the
reference code of NM-PPO, ConstrainedRL4LMs' ``NelderMeadTrainer``, uses the same alpha, gamma,
rho, sigma); adaptive: 1, 1 + 2/K, 3/4 − 1/(2K), 1 − 1/K in K dimensions. Where scipy differs
from that reference loop: a reflected point worse than the second worst but better than the
worst gets an outside contraction (the reference only contracts inside), and convergence is
scipy's xatol / fatol on the simplex (the reference: the std of the vertices' values < tol).

Resuming: the thread's state cannot be saved, but scipy is deterministic given the values, so
:meth:`~NelderMeadAskTell.state_dict` keeps the history of (point, value) and
:meth:`~NelderMeadAskTell.load_state_dict` replays it into a fresh search (checking that each
point asked again is the one recorded).
"""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Any

import numpy as np
from scipy.optimize import minimize

__all__ = ["NelderMeadAskTell", "initial_simplex"]


def initial_simplex(x0: np.ndarray, scale: float) -> np.ndarray:
    """The simplex of x0 and x0 + scale · e_k, one vertex per coordinate.

    Args:
        x0: the first vertex. Shape: (K,)
        scale: the step along each axis.

    Returns:
        Shape: (K + 1, K)
    """
    x0 = np.asarray(x0, dtype=np.float64)
    assert x0.ndim == 1, x0.shape
    return np.vstack([x0, x0 + scale * np.eye(x0.shape[0])])


class _Stop(Exception):
    """Sent to the worker's objective to end a search that is no longer needed."""


def _search(asks: queue.Queue, tells: queue.Queue, simplex: np.ndarray, options: dict) -> None:
    """The worker thread: scipy's Nelder-Mead with an objective that asks the main thread."""

    def objective(x: np.ndarray) -> float:
        asks.put(("ask", np.array(x, dtype=np.float64)))
        value = tells.get()
        if value is _Stop:
            raise _Stop
        return value

    try:
        res = minimize(
            objective,
            simplex[0],
            method="Nelder-Mead",
            options={**options, "initial_simplex": simplex},
        )
        asks.put(("done", np.array(res.x, dtype=np.float64)))
    except _Stop:
        pass
    except BaseException as e:  # handed to the main thread, which raises it at ask()
        asks.put(("error", e))


class NelderMeadAskTell:
    """scipy's Nelder-Mead minimization, one objective value at a time.

    Args:
        simplex: the initial simplex (:func:`initial_simplex`). Shape: (K + 1, K)
        maxfev: the most values the search takes (scipy's default: 200 · K); once it has
            finished, :meth:`ask` returns its best point and :meth:`tell` is ignored.
        adaptive: Gao & Han 2012's coefficients (scipy's ``adaptive``).
        xatol, fatol: scipy's convergence tolerances.
    """

    def __init__(
        self,
        simplex: np.ndarray,
        *,
        maxfev: int | None = None,
        adaptive: bool = False,
        xatol: float = 1e-4,
        fatol: float = 1e-4,
    ):
        simplex = np.asarray(simplex, dtype=np.float64)
        assert simplex.ndim == 2 and simplex.shape[0] == simplex.shape[1] + 1, simplex.shape
        self._asks: queue.Queue = queue.Queue()
        self._tells: queue.Queue = queue.Queue()
        self.history: list[tuple[list[float], float]] = []
        """Every (point, value) told so far."""
        self.done = False
        """Whether the search has ended (converged or out of evaluations)."""
        self._pending: np.ndarray | None = None
        options = {"maxfev": maxfev, "adaptive": adaptive, "xatol": xatol, "fatol": fatol}
        # The thread holds the queues, not self, so that dropping the search stops its thread.
        thread = threading.Thread(
            target=_search, args=(self._asks, self._tells, simplex, options), daemon=True
        )
        thread.start()
        self._finalizer = weakref.finalize(self, self._tells.put, _Stop)

    def ask(self) -> np.ndarray:
        """The point to evaluate next (the same until :meth:`tell`; the best one when done).

        Returns:
            Shape: (K,)
        """
        if self._pending is None:
            kind, x = self._asks.get()
            if kind == "error":
                raise x
            self.done = kind == "done"
            self._pending = x
        return self._pending.copy()

    def tell(self, value: float) -> None:
        """Report the objective's value at the point of :meth:`ask` (to be minimized)."""
        x = self.ask()
        if self.done:
            return
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"tell: expected a finite objective value, got {value}")
        self.history.append((x.tolist(), value))
        self._pending = None
        self._tells.put(value)

    def close(self) -> None:
        """End the worker thread (also done when the search is garbage-collected)."""
        self._finalizer()

    def state_dict(self) -> dict[str, Any]:
        return {"history": [[x, f] for x, f in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay a saved history into this fresh search (same simplex and options)."""
        if self.history:
            raise RuntimeError("load_state_dict: expected a fresh search (nothing told yet)")
        for i, (x, f) in enumerate(state["history"]):
            asked = self.ask()
            if not np.allclose(asked, x, rtol=0, atol=1e-12):
                raise ValueError(
                    f"load_state_dict: evaluation {i} of the saved search was at {x}, this "
                    f"search asks for {asked.tolist()}: the simplex or options differ"
                )
            self.tell(f)
