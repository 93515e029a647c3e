"""Task families and the one task abstraction, :class:`TaskBatch`.

A *task* T is a small supervised problem: a support set (x_s, y_s) of K examples ("K shots") that the
learner adapts on, and a query set (x_q, y_q) that measures how well it adapted. A *task family* p(T) is a
distribution over tasks; meta-training samples tasks from it, meta-testing samples fresh ones.

Tasks are always handled in batches: every tensor of a :class:`TaskBatch` has a leading task dimension
``B``, so ``x_support`` is ``[B, K, in_features]``. This is what lets the algorithms map over tasks with
``torch.func.vmap``.
"""

from __future__ import annotations

import abc

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import ConfigError, check_positive, check_positive_int

__all__ = [
    "TaskBatch",
    "TaskFamily",
    "SinusoidTasks",
    "QuadraticTasks",
    "mse_loss",
    "make_generator",
]


def mse_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Mean squared error :math:`\frac{1}{n}\sum_i \lVert f(x_i) - y_i \rVert^2` (mean over all entries)."""
    return ((pred - y) ** 2).mean()


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (all sampling in the package takes one)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be a whole number, got {seed!r}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


@dataclass
class TaskBatch:
    """B tasks stacked along the first dimension.

    Attributes:
        x_support: ``[B, K, in_features]`` support inputs.
        y_support: ``[B, K, out_features]`` support targets.
        x_query: ``[B, Q, in_features]`` query inputs.
        y_query: ``[B, Q, out_features]`` query targets.
        info: per-task parameters of the family (e.g. sinusoid amplitude and phase), each ``[B, ...]``.

    Classification families (:class:`~metalearn_core.omniglot.OmniglotTasks`) use images as inputs,
    ``[B, K, 1, H, W]``, and integer class labels as targets, ``[B, K]`` (no feature dimension).
    """

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        b = self.x_support.shape[0]
        for name in ("y_support", "x_query", "y_query"):
            if getattr(self, name).shape[0] != b:
                raise ConfigError(f"TaskBatch.{name} holds {getattr(self, name).shape[0]} tasks but x_support holds {b}")
        if self.x_support.shape[1] != self.y_support.shape[1] or self.x_query.shape[1] != self.y_query.shape[1]:
            raise ConfigError("TaskBatch inputs and targets must hold the same number of examples per task")

    @property
    def n_tasks(self) -> int:
        return self.x_support.shape[0]

    @property
    def shots(self) -> int:
        """K, the number of support examples per task."""
        return self.x_support.shape[1]

    @property
    def queries(self) -> int:
        return self.x_query.shape[1]

    def __len__(self) -> int:
        return self.n_tasks

    def to(self, device) -> "TaskBatch":
        """The same tasks on ``device`` (tasks are always sampled on the CPU, so seeds mean the same everywhere)."""
        return TaskBatch(self.x_support.to(device), self.y_support.to(device), self.x_query.to(device),
                         self.y_query.to(device), {k: v.to(device) for k, v in self.info.items()})

    def task(self, i: int) -> "TaskBatch":
        """The ``i``-th task as a batch of one."""
        sl = slice(i, i + 1)
        return TaskBatch(self.x_support[sl], self.y_support[sl], self.x_query[sl], self.y_query[sl],
                         {k: v[sl] for k, v in self.info.items()})

    def all_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query of every task concatenated: ``([B, K+Q, d_in], [B, K+Q, d_out])``."""
        return (torch.cat([self.x_support, self.x_query], 1), torch.cat([self.y_support, self.y_query], 1))


class TaskFamily(abc.ABC):
    """A distribution over tasks. Subclasses implement :meth:`_sample`.

    Attributes:
        name: used to look up budget presets (see :mod:`metalearn_core.budgets`).
        in_features, out_features: sizes a model must accept and produce.
        loss: ``loss(pred, y) -> scalar`` used for both adaptation and evaluation.
        metric: name of the loss reported in results ("mse").
    """

    name = "family"
    in_features = 1
    out_features = 1
    metric = "mse"
    default_shots = 10
    default_queries = 10
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = staticmethod(mse_loss)

    def sample(self, n_tasks: int, *, shots: int | None = None, queries: int | None = None,
               generator: torch.Generator | None = None, seed: int | None = None,
               dtype: torch.dtype = torch.float32) -> TaskBatch:
        """Sample ``n_tasks`` tasks with ``shots`` support and ``queries`` query examples each.

        Pass either a ``generator`` (to continue a random stream) or a ``seed``.
        """
        n_tasks = check_positive_int("n_tasks", n_tasks)
        shots = check_positive_int("K (shots)", self.default_shots if shots is None else shots,
                                   hint="each task needs at least one support example")
        queries = check_positive_int("queries", self.default_queries if queries is None else queries)
        if generator is None:
            generator = make_generator(0 if seed is None else seed)
        return self._sample(n_tasks, shots, queries, generator, dtype)

    @abc.abstractmethod
    def _sample(self, n_tasks, shots, queries, generator, dtype) -> TaskBatch:
        """Draw ``n_tasks`` tasks (arguments already validated by :meth:`sample`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _uniform(lo: float, hi: float, shape, generator, dtype) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=dtype)


class SinusoidTasks(TaskFamily):
    r"""Sinusoid regression (Finn et al., 2017): :math:`y = A \sin(x - \varphi)`.

    Each task draws an amplitude :math:`A \sim U[0.1, 5]` and a phase :math:`\varphi \sim U[0, \pi]`;
    inputs are :math:`x \sim U[-5, 5]`. The loss is the mean squared error. ``info`` holds
    ``amplitude`` and ``phase`` of each task, ``[B]`` each.
    """

    name = "sinusoid"
    in_features = 1
    out_features = 1
    default_shots = 10
    default_queries = 10

    def __init__(self, amplitude=(0.1, 5.0), phase=(0.0, math.pi), x_range=(-5.0, 5.0)):
        for label, (lo, hi) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"SinusoidTasks {label} must be a (low, high) pair with low < high, got {(lo, hi)}")
        self.amplitude, self.phase, self.x_range = tuple(amplitude), tuple(phase), tuple(x_range)

    @staticmethod
    def function(amplitude, phase, x: torch.Tensor) -> torch.Tensor:
        """The task's true function A·sin(x − φ) evaluated at ``x`` (broadcasts)."""
        return amplitude * torch.sin(x - phase)

    def _sample(self, n_tasks, shots, queries, generator, dtype):
        amp = _uniform(*self.amplitude, (n_tasks,), generator, dtype)
        phase = _uniform(*self.phase, (n_tasks,), generator, dtype)
        xs = _uniform(*self.x_range, (n_tasks, shots, 1), generator, dtype)
        xq = _uniform(*self.x_range, (n_tasks, queries, 1), generator, dtype)
        a, p = amp[:, None, None], phase[:, None, None]
        return TaskBatch(xs, self.function(a, p, xs), xq, self.function(a, p, xq),
                         {"amplitude": amp, "phase": phase})

    def __repr__(self) -> str:
        return f"SinusoidTasks(amplitude={self.amplitude}, phase=(0, π), x_range={self.x_range})"


class QuadraticTasks(TaskFamily):
    r"""A toy family whose losses are exactly quadratic, so every quantity has a closed form.

    Task T is noise-free linear regression in ``dim`` dimensions: a true weight vector
    :math:`w_T \sim \mathcal N(\mu, \sigma^2 I)`, inputs :math:`x \sim \mathcal N(0, \mathrm{diag}(s^2))`,
    targets :math:`y = x^\top w_T`. With ``curvature_coupling`` γ ≠ 0 the input scale of coordinate j is
    multiplied by :math:`e^{\gamma z_j}`, :math:`z = (w_T - \mu)/\sigma`: tasks far out along a coordinate are
    also sharper along it, so curvature and optimum are correlated and the MAML and joint-training optima
    differ (MAML pays less attention to tasks that are quick to adapt to). With the linear model :math:`f_\theta(x) = x^\top\theta` and the mean
    squared error, the loss of a data set :math:`X` is

    .. math:: L(\theta) = \tfrac12 (\theta - w_T)^\top H (\theta - w_T), \qquad H = \tfrac{2}{n} X^\top X,

    a quadratic bowl centred on :math:`w_T` with Hessian :math:`H`. One step of gradient descent is then
    linear, :math:`\theta' - w_T = (I - \alpha H_s)(\theta - w_T)`, and MAML's meta-gradient is known
    exactly (:meth:`meta_gradient`). ``info["w"]`` holds each task's optimum ``[B, dim]``.
    """

    name = "quadratic"
    out_features = 1
    default_shots = 10
    default_queries = 10

    def __init__(self, dim: int = 2, center_mean=(1.0, 1.0), center_std: float = 1.0, input_scale=(1.0, 0.5),
                 curvature_coupling: float = 0.25):
        self.dim = check_positive_int("dim", dim)
        self.curvature_coupling = float(curvature_coupling)
        if not math.isfinite(self.curvature_coupling):
            raise ConfigError(f"QuadraticTasks curvature_coupling must be finite, got {curvature_coupling}")
        self.in_features = self.dim
        self.center_mean = torch.as_tensor(center_mean, dtype=torch.float64).reshape(-1)
        self.input_scale = torch.as_tensor(input_scale, dtype=torch.float64).reshape(-1)
        for label, t in (("center_mean", self.center_mean), ("input_scale", self.input_scale)):
            if t.numel() == 1:
                t = t.expand(self.dim).clone()
            if t.numel() != self.dim:
                raise ConfigError(f"QuadraticTasks {label} must have {self.dim} entries (dim={self.dim}), got {t.numel()}")
            setattr(self, label, t)
        self.center_std = float(center_std)
        if not (self.center_std >= 0 and math.isfinite(self.center_std)):
            raise ConfigError(f"QuadraticTasks center_std must be >= 0, got {center_std}")
        for s in self.input_scale.tolist():
            check_positive("QuadraticTasks input_scale", s)

    def _sample(self, n_tasks, shots, queries, generator, dtype):
        mean, scale = self.center_mean.to(dtype), self.input_scale.to(dtype)
        w = mean + self.center_std * torch.randn((n_tasks, self.dim), generator=generator, dtype=dtype)
        if self.curvature_coupling and self.center_std > 0:
            scale = scale * torch.exp(self.curvature_coupling * (w - mean) / self.center_std)  # [B, d]
        scale = scale.expand(n_tasks, self.dim)[:, None, :]
        xs = torch.randn((n_tasks, shots, self.dim), generator=generator, dtype=dtype) * scale
        xq = torch.randn((n_tasks, queries, self.dim), generator=generator, dtype=dtype) * scale
        ys = (xs @ w[:, :, None])
        yq = (xq @ w[:, :, None])
        return TaskBatch(xs, ys, xq, yq, {"w": w})

    # ---- closed forms -------------------------------------------------------------------------------
    @staticmethod
    def hessian(x: torch.Tensor) -> torch.Tensor:
        r"""Hessian :math:`H = \frac{2}{n}X^\top X` of the mean squared error for inputs ``x`` ``[..., n, d]``."""
        return 2.0 * x.transpose(-1, -2) @ x / x.shape[-2]

    @classmethod
    def inner_map(cls, x_support: torch.Tensor, alpha: float, steps: int) -> torch.Tensor:
        r""":math:`P = (I - \alpha H_s)^k`, so that k inner steps give :math:`\theta' - w = P(\theta - w)`."""
        h = cls.hessian(x_support)
        eye = torch.eye(h.shape[-1], dtype=h.dtype).expand_as(h)
        return torch.linalg.matrix_power(eye - alpha * h, steps)

    @classmethod
    def adapted(cls, theta: torch.Tensor, batch: TaskBatch, alpha: float, steps: int) -> torch.Tensor:
        r"""Closed form of the adapted parameters :math:`\theta'_T = w_T + P_T(\theta - w_T)`, ``[B, d]``."""
        w = batch.info["w"]
        p = cls.inner_map(batch.x_support, alpha, steps)
        return w + ((theta - w)[:, None, :] @ p.transpose(-1, -2))[:, 0]

    @classmethod
    def meta_gradient(cls, theta: torch.Tensor, batch: TaskBatch, alpha: float, steps: int,
                      first_order: bool = False) -> torch.Tensor:
        r"""Exact meta-gradient of :math:`\frac1B\sum_T L^q_T(\theta'_T)` with respect to ``theta`` ``[d]``.

        MAML:  :math:`\frac1B\sum_T P_T^\top H_{q,T} P_T(\theta - w_T)` — the factor :math:`P_T^\top
        = (I-\alpha H_s)^k` is the Jacobian :math:`\partial\theta'/\partial\theta`, the second-order term.
        First-order MAML drops it: :math:`\frac1B\sum_T H_{q,T} P_T(\theta - w_T)`.
        """
        w = batch.info["w"]
        p = cls.inner_map(batch.x_support, alpha, steps)
        hq = cls.hessian(batch.x_query)
        e = (theta - w)[:, :, None]                      # [B, d, 1]
        g = hq @ (p @ e)                                 # gradient of the query loss at θ'
        if not first_order:
            g = p.transpose(-1, -2) @ g
        return g[:, :, 0].mean(0)

    @classmethod
    def maml_optimum(cls, batch: TaskBatch, alpha: float, steps: int) -> torch.Tensor:
        r"""Minimiser of the MAML objective over ``batch``: :math:`(\sum_T M_T)^{-1}\sum_T M_T w_T`,
        with :math:`M_T = P_T^\top H_{q,T} P_T`."""
        p = cls.inner_map(batch.x_support, alpha, steps)
        m = p.transpose(-1, -2) @ cls.hessian(batch.x_query) @ p
        return torch.linalg.solve(m.sum(0), (m @ batch.info["w"][:, :, None]).sum(0))[:, 0]

    @classmethod
    def joint_optimum(cls, batch: TaskBatch) -> torch.Tensor:
        r"""Minimiser of the pooled loss of all tasks' data: :math:`(\sum_T H_T)^{-1}\sum_T H_T w_T`."""
        x, _ = batch.all_data()
        h = cls.hessian(x)
        return torch.linalg.solve(h.sum(0), (h @ batch.info["w"][:, :, None]).sum(0))[:, 0]

    def __repr__(self) -> str:
        return (f"QuadraticTasks(dim={self.dim}, center_mean={self.center_mean.tolist()}, "
                f"center_std={self.center_std}, input_scale={self.input_scale.tolist()}, "
                f"curvature_coupling={self.curvature_coupling})")
