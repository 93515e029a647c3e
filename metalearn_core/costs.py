r"""What a meta-step costs: wall-clock time and peak memory, measured.

* :func:`time_per_call` — median milliseconds per call over interleavable rounds (machine noise hits every
  measured function alike when the rounds are interleaved, as :func:`measure_step_costs` does).
* :class:`PeakMemory` — a context manager that counts every tensor storage the operators inside it
  allocate, while it is alive, and keeps the peak. It sees the tensors that ``torch.func`` (``grad``,
  ``vmap``) creates, so it measures what a batched meta-step really holds at once: activations, the
  graph kept for the backward pass, gradients. It counts tensor memory only (no allocator overhead), which
  makes it exact and repeatable on any machine, unlike the process's resident size.
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .algorithms import MetaLearner
from .errors import check_positive_int
from .tasks import TaskFamily

__all__ = ["PeakMemory", "time_per_call", "StepCost", "measure_step_costs"]


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated by the operators run inside the ``with`` block.

    >>> with PeakMemory() as mem:                       # doctest: +SKIP
    ...     grads, _ = learner.meta_gradient(params, batch)
    >>> mem.peak_bytes                                  # doctest: +SKIP

    Tensors that existed before the block (parameters, the task batch) are not counted; each storage is
    counted once however many views of it exist, and stops counting when it is freed.
    """

    def __init__(self):
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._sizes: dict[int, int] = {}

    def _release(self, key: int, nbytes: int) -> None:
        if self._sizes.pop(key, None) is not None:
            self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._sizes:
                continue
            nbytes = storage.nbytes()
            self._sizes[key] = nbytes
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(storage, self._release, key, nbytes)
        return out


def time_per_call(fn: Callable[[], object], calls: int = 20) -> float:
    """Milliseconds per call of ``fn()``, averaged over ``calls`` consecutive calls."""
    calls = check_positive_int("calls", calls)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1000.0 * (time.perf_counter() - start) / calls


@dataclass(frozen=True)
class StepCost:
    """One algorithm's meta-step: median ms over rounds, and the peak tensor memory of one step."""

    name: str
    ms_per_step: float
    peak_bytes: int

    @property
    def peak_kb(self) -> float:
        return self.peak_bytes / 1e3


def measure_step_costs(learners: Sequence[MetaLearner], family: TaskFamily, *, meta_batch: int = 25,
                       shots: int | None = None, queries: int | None = None, rounds: int = 5, calls: int = 20,
                       seed: int = 0, params=None, threads: int | None = 1) -> list[StepCost]:
    """Time and memory of one meta-gradient for each learner, on the same meta-batch and parameters.

    Rounds are interleaved (learner 1, learner 2, ..., then again), so background load affects all alike;
    the reported time is the median over rounds. Ratios between learners are therefore more trustworthy
    than absolute milliseconds, which depend on the machine and its load. ``threads`` sets torch's number
    of threads while timing (restored afterwards; ``None`` leaves it alone): one thread is as fast as two
    for these small networks and much less sensitive to other work running on the machine.
    """
    if threads is None:
        return _measure(learners, family, meta_batch, shots, queries, rounds, calls, seed, params)
    before = torch.get_num_threads()
    torch.set_num_threads(check_positive_int("threads", threads))
    try:
        return _measure(learners, family, meta_batch, shots, queries, rounds, calls, seed, params)
    finally:
        torch.set_num_threads(before)


def _measure(learners, family, meta_batch, shots, queries, rounds, calls, seed, params):
    if not learners:
        raise ValueError("measure_step_costs needs at least one learner")
    rounds = check_positive_int("rounds", rounds)
    batch = family.sample(check_positive_int("meta_batch", meta_batch), shots=shots, queries=queries, seed=seed)
    # each learner's own initial parameters (learners with meta-parameters, e.g. Meta-SGD, have more of them;
    # the network's entries are the same for every learner of the same model and seed)
    inits = [learner.model.init(seed) if params is None else params for learner in learners]
    peaks = []
    for learner, p in zip(learners, inits):
        learner.meta_gradient(p, batch)                   # warm-up: torch.func builds its machinery once
        with PeakMemory() as mem:
            learner.meta_gradient(p, batch)
        peaks.append(mem.peak_bytes)
    times: list[list[float]] = [[] for _ in learners]
    for _ in range(rounds):
        for i, (learner, p) in enumerate(zip(learners, inits)):
            times[i].append(time_per_call(lambda: learner.meta_gradient(p, batch), calls))
    return [StepCost(getattr(l, "label", None) or l.describe(), statistics.median(t), p)
            for l, t, p in zip(learners, times, peaks)]
