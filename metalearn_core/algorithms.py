r"""Meta-learning algorithms behind one small interface, :class:`MetaLearner`.

Every algorithm answers two questions:

* :meth:`MetaLearner.adapt` — the inner loop: given initial parameters θ and a task's support set, return
  adapted parameters θ'. Evaluation and widgets only ever call this.
* :meth:`MetaLearner.meta_gradient` — what the outer optimiser steps on, for a batch of tasks. The one
  training loop (:func:`metalearn_core.training.meta_train`) calls only this.

The inner loop is plain gradient descent, :math:`\theta_{j+1} = \theta_j - \alpha\nabla_\theta
L^{s}_T(\theta_j)`, written with ``torch.func.grad`` so that it can itself be differentiated (MAML's
second-order term) and mapped over the tasks of a batch with ``torch.func.vmap``.

=================  ==============================================================================
algorithm          meta-gradient for a batch of B tasks
=================  ==============================================================================
:class:`MAML`      :math:`\nabla_\theta \frac1B\sum_T L^q_T(\theta'_T)`, through the inner loop (Hessian term)
:class:`FOMAML`    :math:`\frac1B\sum_T \nabla L^q_T(\theta'_T)`, the inner loop treated as constant
:class:`Reptile`   :math:`\frac1B\sum_T (\theta - \tilde\theta_T)`, so that Adam's step moves θ toward θ̃
:class:`JointTraining`  :math:`\nabla_\theta \frac1B\sum_T L_T(\theta)` on pooled data (pre-training baseline)
:class:`ProtoNet`  :math:`\nabla_\theta \frac1B\sum_T L^q_T(\theta)` with prototype logits (no inner loop)
:class:`TAMLEntropy`  MAML's, plus :math:`\lambda\nabla_\theta\frac1B\sum_T(H_T(f_{\theta'_T}) - H_T(f_\theta))`
:class:`TAMLInequality`  MAML's, plus :math:`\lambda\nabla_\theta I(\{L^q_T(\theta)\}_T)` (an inequality measure)
:class:`MetaSGD`   MAML's, with respect to θ *and* the per-parameter inner learning rates
:class:`LearnedUpdate`  MAML's, with respect to θ and the weights of a network proposing the inner step
=================  ==============================================================================

Predictions for a task's query examples come from :meth:`MetaLearner.predict` (the model at the adapted
parameters for the gradient-based learners; distances to class prototypes for :class:`ProtoNet`), which is
what evaluation scores. Its ``transductive`` argument chooses how networks with batch normalisation see the
query set (all query examples in one forward pass, or each one alone with the support set).
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Sequence

import torch
from torch.func import grad, vmap

from .errors import ConfigError, ShapeMismatchError, check_positive, check_positive_int
from .inequality import check_measure, describe_measure, inequality
from .models import FunctionalModel, Params, WithMetaParameters
from .omniglot import cross_entropy_loss
from .tasks import TaskBatch, mse_loss

__all__ = ["MetaLearner", "MAML", "FOMAML", "Reptile", "JointTraining", "ProtoNet", "TAMLEntropy", "TAMLInequality",
           "MetaSGD", "LearnedUpdate", "prediction_entropy", "ALGORITHMS", "make_learner"]

Metrics = dict[str, torch.Tensor]


#: images per forward pass when predicting one query at a time (see :meth:`MetaLearner.predict`)
NT_IMAGES_PER_CHUNK = 64


class MetaLearner(abc.ABC):
    """Base class of all algorithms.

    Args:
        model: a :class:`~metalearn_core.models.FunctionalModel`.
        alpha: inner-loop learning rate α (> 0).
        inner_steps: gradient steps in the inner loop during meta-training.
        loss: ``loss(pred, y) -> scalar``; use the task family's ``loss`` (default: mean squared error).
        vectorize: map over the tasks of a batch with ``torch.func.vmap`` (True) or a Python loop (False).
            Both compute the same numbers; vmap is faster for small MLPs (see ``benchmarks/``), the loop for
            :class:`~metalearn_core.models.Conv4` on a CPU. ``None`` (default) chooses: vmap on a GPU, and on a
            CPU whatever the model's ``vmap_on_cpu`` says.
    """

    name = "learner"
    needs_inner_steps = True

    def __init__(self, model: FunctionalModel, *, alpha: float = 0.01, inner_steps: int = 1,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse_loss,
                 vectorize: bool | None = None):
        if not isinstance(model, FunctionalModel):
            raise TypeError(f"model must be a metalearn_core FunctionalModel (e.g. MLP), got {type(model).__name__}")
        self.model = model
        self.alpha = check_positive("inner learning rate α (alpha)", alpha, hint="e.g. alpha=0.01")
        minimum = 1 if self.needs_inner_steps else 0
        self.inner_steps = check_positive_int("inner_steps", inner_steps, minimum=minimum,
                                              hint=f"{self.name} needs at least one inner step" if minimum else "")
        self.loss = loss
        self.vectorize = None if vectorize is None else bool(vectorize)

    # ---- the inner loop --------------------------------------------------------------------------------
    def task_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L_T(θ) on one task's data ``x`` ``[n, d_in]``, ``y`` ``[n, d_out]``."""
        return self.loss(self.model(params, x), y)

    def inner_step(self, params: Params, x: torch.Tensor, y: torch.Tensor, alpha: float | None = None,
                   first_order: bool = False, trainable: Sequence[str] | None = None) -> Params:
        r"""One step :math:`\theta - \alpha\nabla_\theta L_T(\theta)` on one task.

        With ``first_order=True`` the gradient is detached, so differentiating the result with respect to θ
        gives the identity (the first-order approximation of MAML). ``trainable`` names the parameters that
        move (default: all); the others stay frozen, e.g. ``trainable=["4.weight", "4.bias"]`` fine-tunes
        only the last layer of an MLP (a *linear probe*).
        """
        a = self.alpha if alpha is None else alpha
        g = grad(self.task_loss)(params, x, y)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        if trainable is None:
            return {k: p - a * g[k] for k, p in params.items()}
        return {k: (p - a * g[k]) if k in trainable else p for k, p in params.items()}

    def check_trainable(self, params: Params, trainable: Sequence[str] | None) -> tuple[str, ...] | None:
        """Validate a ``trainable`` selection of parameter names against ``params``."""
        if trainable is None:
            return None
        names = (trainable,) if isinstance(trainable, str) else tuple(trainable)
        network = [k for k in self.model.network_names() if k in params]
        unknown = [n for n in names if n not in network]
        if unknown or not names:
            raise ConfigError(f"trainable must name some of the network's parameters {network}; "
                              f"got {list(names)}" + (f" (unknown: {unknown})" if unknown else ""))
        return names

    def adapt(self, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int | None = None,
              alpha: float | None = None, first_order: bool = False,
              trainable: Sequence[str] | None = None) -> Params:
        """θ' after ``steps`` inner steps (default: the meta-training number) on one task's support set.

        ``trainable`` optionally names the parameters that are adapted (the rest stay frozen).
        """
        steps = self.inner_steps if steps is None else check_positive_int("steps", steps, minimum=0)
        alpha = self.alpha if alpha is None else check_positive("α (alpha)", alpha)
        trainable = self.check_trainable(params, trainable)
        for _ in range(steps):
            params = self.inner_step(params, x, y, alpha, first_order, trainable)
        return params

    # ---- predictions on a task's query set ---------------------------------------------------------------------
    def predict(self, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                transductive: bool = True) -> torch.Tensor:
        r"""The learner's outputs for one task's query inputs ``x_query``, given the task's support set.

        For the gradient-based learners ``params`` are the *adapted* parameters θ' (from :meth:`adapt`) and
        the prediction is simply :math:`f_{\theta'}(x_q)`; the support set is not looked at again.
        :class:`ProtoNet` overrides :meth:`_predict` to classify by distance to the support set's class means.

        ``transductive`` only matters for networks whose output for one example depends on the other
        examples of the same forward pass (batch normalisation with batch statistics, as in
        :class:`~metalearn_core.models.Conv4`):

        * ``True`` (default, the protocol of MAML's code): all query examples go through the network
          together, so they share batch statistics and each prediction depends a little on the *other* query
          examples. Slightly optimistic: the test set helps normalise itself. (ProtoNets' published code
          normalises with running averages at test time instead, which is not transductive either.)
        * ``False`` (the definition of Nichol et al., 2018, Reptile): each query example is predicted by its
          own forward pass over the support set plus that one example, and its output is kept. No query
          example can influence another. This costs one forward pass per query example.

        For networks without batch statistics (an MLP) both give the same numbers.
        """
        if transductive:
            return self._predict(params, x_support, y_support, x_query)

        def one(xq):                                     # one query example, [*example shape]
            return self._predict(params, x_support, y_support, xq[None], together=True)[0]

        # a few queries at a time, so that no activation outgrows what the allocator keeps for reuse (one
        # forward pass of 20 queries with a 20-image support set is 84 MB per Conv4 layer; fresh memory of that
        # size costs as much system time in page faults as the convolutions cost)
        chunk = max(1, NT_IMAGES_PER_CHUNK // (x_support.shape[0] + 1))
        return vmap(one, chunk_size=chunk)(x_query)

    def _predict(self, params: Params, x_support: torch.Tensor, y_support: torch.Tensor, x_query: torch.Tensor,
                 together: bool = False) -> torch.Tensor:
        """Outputs for ``x_query``; with ``together=True`` they come from one forward pass over the support
        and query inputs concatenated (the support's outputs are discarded)."""
        if together:
            return self.model(params, torch.cat([x_support, x_query]))[x_support.shape[0]:]
        return self.model(params, x_query)

    # ---- the outer loop ----------------------------------------------------------------------------------
    def check_batch(self, batch: TaskBatch, where: str = "the task batch") -> None:
        """Raise :class:`~metalearn_core.errors.ShapeMismatchError` unless the batch's support and query data
        fit the model (see :meth:`~metalearn_core.models.FunctionalModel.check_input`), and a
        :class:`~metalearn_core.errors.ConfigError` if class labels meet the default mean squared error."""
        self.model.check_input(batch.x_support, batch.y_support, where=where)
        self.model.check_input(batch.x_query, batch.y_query, where=f"{where} (query set)")
        if self.loss is mse_loss and not batch.y_support.is_floating_point():
            raise ConfigError(
                f"{self.name} uses the mean squared error (the default loss), but {where} has integer class "
                f"labels: build the learner with the family's loss, e.g. {type(self).__name__}(model, "
                f"loss=family.loss) for the cross-entropy")

    def meta_gradient(self, params: Params, batch: TaskBatch) -> tuple[Params, Metrics]:
        """Return ``(grads, metrics)`` for one meta-batch; ``grads`` has the keys and shapes of ``params``.

        ``metrics`` holds at least ``loss`` (the meta-objective's value) and ``loss_before`` (the loss
        before adaptation), as scalar tensors.
        """
        self.check_batch(batch)
        return self._meta_gradient(params, batch)

    @abc.abstractmethod
    def _meta_gradient(self, params, batch):
        """The algorithm's meta-gradient for a batch whose shapes were already checked."""

    def uses_vmap(self, data: torch.Tensor) -> bool:
        """Whether tasks held in ``data`` are mapped with vmap (see ``vectorize``) or looped over."""
        if self.vectorize is not None:
            return self.vectorize
        return data.device.type != "cpu" or getattr(self.model, "vmap_on_cpu", True)

    def _map_tasks(self, fn, params, *tensors):
        """``fn(params, *task_tensors)`` for every task, stacked: vmap or a plain loop (same numbers)."""
        if self.uses_vmap(tensors[0]):
            return vmap(fn, in_dims=(None,) + (0,) * len(tensors))(params, *tensors)
        outs = [fn(params, *(t[i] for t in tensors)) for i in range(tensors[0].shape[0])]
        return torch.utils._pytree.tree_map(lambda *xs: torch.stack(xs), *outs)

    # ---- description ---------------------------------------------------------------------------------------
    def hyperparameters(self) -> dict:
        return {"algorithm": self.name, "alpha": self.alpha, "inner_steps": self.inner_steps}

    def describe(self) -> str:
        s = "step" if self.inner_steps == 1 else "steps"
        return f"{self.name} (α={self.alpha:g}, {self.inner_steps} inner {s})"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items() if k != "algorithm")
        return f"{type(self).__name__}({self.model!r}, {args})"


class MAML(MetaLearner):
    r"""Model-Agnostic Meta-Learning (Finn et al., 2017), exact second order.

    Meta-objective :math:`\frac1B\sum_T L^q_T(\theta'_T)` with :math:`\theta'_T` after ``inner_steps``
    steps on the support set. Its gradient contains, for each step, the Jacobian
    :math:`I - \alpha\nabla^2 L^s_T`; torch.func differentiates through the inner loop exactly.
    """

    name = "MAML"
    first_order = False

    def _query_loss(self, params, xs, ys, xq, yq):
        """One task's meta-objective L^q_T(θ'_T), with its metrics (query loss after and before adaptation)
        as aux. Subclasses (TAML) add terms to the objective and entries to the metrics."""
        adapted = self.adapt(params, xs, ys, first_order=self.first_order)
        after = self.task_loss(adapted, xq, yq)
        return after, {"loss": after.detach(), "loss_before": self.task_loss(params, xq, yq).detach()}

    def _meta_gradient(self, params, batch):
        # Per-task meta-gradients mapped over tasks, then averaged: the gradient of the mean query loss.
        # (Measured faster on CPU than differentiating the vmapped mean; see benchmarks/.)
        per_task = grad(self._query_loss, has_aux=True)
        grads, metrics = self._map_tasks(per_task, params, batch.x_support, batch.y_support,
                                         batch.x_query, batch.y_query)
        return {k: g.mean(0) for k, g in grads.items()}, {k: v.mean() for k, v in metrics.items()}

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "first_order": self.first_order}

    def describe(self) -> str:
        return super().describe()[:-1] + (", first order)" if self.first_order else ", second order)")


class FOMAML(MAML):
    r"""First-order MAML: the same objective, with :math:`\partial\theta'/\partial\theta` replaced by I.

    Its meta-gradient is the query-loss gradient at the adapted parameters,
    :math:`\frac1B\sum_T \nabla L^q_T(\theta'_T)`: no second derivatives are computed.
    """

    name = "FOMAML"
    first_order = True


class Reptile(MetaLearner):
    r"""Reptile (Nichol et al., 2018): :math:`\phi \leftarrow \phi + \epsilon(\tilde\phi - \phi)`.

    For each task, :math:`\tilde\phi_T` is the result of ``inner_steps`` gradient steps on the task's examples
    (support and query together: Reptile has no separate query loss). The "gradient" handed to the outer
    optimiser is :math:`\frac1B\sum_T(\phi - \tilde\phi_T)`; with plain SGD and step size ε this is exactly
    Reptile's update, with Adam (the one training loop) it is the batched Adam variant the paper also uses.
    With one full-batch inner step it equals α times the joint-training gradient.

    Args:
        inner_batch: ``None`` (default): every inner step uses all of the task's examples (full batch). A
            number b: each inner step uses the next b examples, as Nichol et al. ran Omniglot (e.g. 10 training
            shots of 5 classes, mini-batches of 10, 5 steps: one pass over the task). The examples are taken
            in a stratified order (first drawing of every class, then the second, ...), so each mini-batch
            holds every class in turn; the order wraps around when the steps need more than one pass. Test-time
            adaptation (:meth:`adapt`) stays full batch on the support set.
    """

    name = "Reptile"

    def __init__(self, model: FunctionalModel, *, alpha: float = 0.01, inner_steps: int = 1,
                 inner_batch: int | None = None, **kwargs):
        super().__init__(model, alpha=alpha, inner_steps=inner_steps, **kwargs)
        self.inner_batch = None if inner_batch is None else check_positive_int("inner_batch", inner_batch)

    @staticmethod
    def stratified_order(y: torch.Tensor) -> torch.Tensor:
        """Indices that put one example of every class in turn: ``[c0, c1, ..., c0, c1, ...]`` for labels ``y``
        ``[n]`` (each class keeps its own order)."""
        y = y.reshape(y.shape[0], -1)[:, 0] if y.dim() > 1 else y
        same = y[:, None] == y[None, :]
        rank = torch.tril(same.to(torch.int64), diagonal=-1).sum(1)      # earlier examples of the same class
        # n exceeds every label, so the key sorts by rank first, then by class; no data-dependent Python
        # number is taken, so this also runs under vmap
        return (rank * y.shape[0] + y.to(torch.int64)).argsort(stable=True)

    def _adapt_minibatches(self, params, x, y):
        n, b = x.shape[0], self.inner_batch
        order = self.stratified_order(y)
        for step in range(self.inner_steps):
            idx = order[(torch.arange(b) + step * b) % n]
            params = self.inner_step(params, x[idx], y[idx])
        return params

    def _difference(self, params, x, y):
        adapted = self.adapt(params, x, y) if self.inner_batch is None else self._adapt_minibatches(params, x, y)
        diff = {k: params[k] - adapted[k] for k in params}
        return diff, self.task_loss(params, x, y), self.task_loss(adapted, x, y)

    def _meta_gradient(self, params, batch):
        x, y = batch.all_data()
        diff, before, after = self._map_tasks(self._difference, params, x, y)
        grads = {k: v.mean(0) for k, v in diff.items()}
        return grads, {"loss": after.mean(), "loss_before": before.mean()}

    def hyperparameters(self) -> dict:
        out = super().hyperparameters()
        return out if self.inner_batch is None else {**out, "inner_batch": self.inner_batch}

    def describe(self) -> str:
        text = super().describe()
        return text if self.inner_batch is None else text[:-1] + f", mini-batches of {self.inner_batch})"


class JointTraining(MetaLearner):
    r"""The transfer-learning baseline: pre-train on all tasks pooled, fine-tune at test time.

    Meta-gradient :math:`\nabla_\theta \frac1B\sum_T L_T(\theta)` on each task's support and query data, with
    no inner loop; :meth:`adapt` is ordinary fine-tuning by gradient descent with step size α.
    """

    name = "JointTraining"
    needs_inner_steps = False

    def __init__(self, model, *, alpha: float = 0.01, inner_steps: int = 0, **kwargs):
        super().__init__(model, alpha=alpha, inner_steps=inner_steps, **kwargs)

    def _meta_gradient(self, params, batch):
        x, y = batch.all_data()

        def objective(p):
            losses = self._map_tasks(self.task_loss, p, x, y)
            return losses.mean(), losses.detach().mean()

        grads, loss = grad(objective, has_aux=True)(params)
        return grads, {"loss": loss, "loss_before": loss}

    def describe(self) -> str:
        return f"{self.name} (fine-tuning α={self.alpha:g})"


class ProtoNet(MetaLearner):
    r"""Prototypical Networks (Snell, Swersky & Zemel, 2017): classify by distance to class means.

    The model is an *embedding* :math:`f_\theta` (``model.embed``; e.g. :class:`~metalearn_core.models.Conv4`,
    whose head is not used). For one episode, the prototype of class c is the mean embedding of its support
    examples, :math:`p_c = \frac1{|S_c|}\sum_{x\in S_c} f_\theta(x)`, and a query example x gets the logits

    .. math:: z_c(x) = -\lVert f_\theta(x) - p_c\rVert^2,

    so the softmax puts most probability on the nearest prototype. The meta-gradient is the gradient of the
    mean query cross-entropy over the batch of episodes, through the embedding of both support and query
    examples (mapped over the episodes with vmap, like the other learners).

    **There is no inner loop**: "adapting" to a new task is computing its prototypes, which :meth:`predict`
    does from the support set it is given. :meth:`adapt` and :meth:`inner_step` therefore return the
    parameters unchanged, and an adaptation curve of ProtoNet is flat (its value after 0 steps is the
    result). α and inner steps have no meaning here: α is kept only so that every learner has one.

    As in the authors' code, support and query examples go through the network in one forward pass (with
    :class:`~metalearn_core.models.Conv4` they share batch-normalisation statistics); see
    :meth:`MetaLearner.predict` for the non-transductive alternative.

    Args:
        model: a model with an ``embed(params, x)`` method.
        ways: N, classes per episode; default the model's ``out_features`` (``Conv4(ways=5)`` → 5). An
            embedding network without a head (``Conv4(ways=None)``) can serve any number of classes: give
            ``ways`` here, e.g. 20 for meta-training and another ``ProtoNet(model, ways=5)`` for testing.
        loss: default the cross-entropy of logits and integer labels.
    """

    name = "ProtoNet"
    needs_inner_steps = False

    def __init__(self, model: FunctionalModel, *, ways: int | None = None, alpha: float = 0.01,
                 inner_steps: int = 0, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy_loss,
                 vectorize: bool | None = None):
        if not callable(getattr(model, "embed", None)):
            raise ConfigError(f"ProtoNet needs a model with an embed(params, x) method (e.g. Conv4), got {model!r}")
        if inner_steps != 0:
            raise ConfigError(f"ProtoNet has no inner loop (adapting is computing class prototypes), got "
                              f"inner_steps={inner_steps!r}: use inner_steps=0")
        super().__init__(model, alpha=alpha, inner_steps=0, loss=loss, vectorize=vectorize)
        ways = model.out_features if ways is None else ways
        if ways is None:
            raise ConfigError(f"ProtoNet needs the number of classes per episode: pass ways=N (the model "
                              f"{model!r} has no head to tell it)")
        self.ways = check_positive_int("ways (classes per episode)", ways, minimum=2)

    def prototypes(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Class means ``[ways, d]`` of support embeddings ``[n, d]`` with labels ``[n]`` in 0..ways−1."""
        onehot = (labels[:, None] == torch.arange(self.ways, device=labels.device)).to(embedding.dtype)  # [n, N]
        return (onehot.T @ embedding) / onehot.sum(0)[:, None]

    @staticmethod
    def logits(query_embedding: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Negative squared Euclidean distances ``[q, ways]`` of query embeddings ``[q, d]`` to prototypes."""
        return -((query_embedding[:, None, :] - prototypes[None, :, :]) ** 2).sum(-1)

    def _predict(self, params, x_support, y_support, x_query, together: bool = False):
        # support and query in one forward pass, in both protocols (see the class docstring)
        z = self.model.embed(params, torch.cat([x_support, x_query]))
        n = x_support.shape[0]
        return self.logits(z[n:], self.prototypes(z[:n], y_support))

    def adapt(self, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int | None = None,
              alpha: float | None = None, first_order: bool = False,
              trainable: Sequence[str] | None = None) -> Params:
        """``params`` unchanged: ProtoNet adapts by computing prototypes inside :meth:`predict`."""
        self.check_trainable(params, trainable)
        return params

    def inner_step(self, params: Params, x: torch.Tensor, y: torch.Tensor, alpha: float | None = None,
                   first_order: bool = False, trainable: Sequence[str] | None = None) -> Params:
        """``params`` unchanged (no inner loop), so adaptation curves of ProtoNet are flat."""
        return params

    def check_batch(self, batch: TaskBatch, where: str = "the task batch") -> None:
        super().check_batch(batch, where)
        for name, y in (("support", batch.y_support), ("query", batch.y_query)):
            if y.numel() and int(y.max()) >= self.ways:
                raise ShapeMismatchError(
                    f"{where} has {name} labels up to {int(y.max())}, but this ProtoNet builds {self.ways} "
                    f"prototypes (labels 0..{self.ways - 1}): use ProtoNet(model, ways={int(y.max()) + 1})")
        counts = torch.nn.functional.one_hot(batch.y_support.reshape(-1, batch.y_support.shape[-1]),
                                             self.ways).sum(1)
        if (counts == 0).any():
            raise ShapeMismatchError(
                f"{where} has episodes whose support set lacks some of the labels 0..{self.ways - 1}: every "
                f"class needs at least one support example to have a prototype")

    def _episode_loss(self, params, xs, ys, xq, yq):
        loss = self.loss(self._predict(params, xs, ys, xq), yq)
        return loss, loss.detach()

    def _meta_gradient(self, params, batch):
        per_task = grad(self._episode_loss, has_aux=True)
        grads, losses = self._map_tasks(per_task, params, batch.x_support, batch.y_support,
                                        batch.x_query, batch.y_query)
        loss = losses.mean()
        return {k: g.mean(0) for k, g in grads.items()}, {"loss": loss, "loss_before": loss}

    def hyperparameters(self) -> dict:
        return {"algorithm": self.name, "ways": self.ways}

    def describe(self) -> str:
        return f"{self.name} ({self.ways}-way, squared Euclidean distance)"


# ---- TAML: task-agnostic meta-learning (Jamal & Qi, 2019) ------------------------------------------------------

def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    r"""Mean entropy :math:`\frac1n\sum_i H(\mathrm{softmax}(z_i))` of the predicted label distributions of
    logits ``[..., N]`` (in nats; :math:`\ln N` for a uniform guess, 0 for a certain one)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def _check_lambda(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(float(lam)) or lam < 0:
        raise ConfigError(f"the TAML weight λ (lam) must be a finite number ≥ 0, got {lam!r}: λ = 0 is plain MAML, "
                          f"e.g. lam=0.1 adds a tenth of the TAML term")
    return float(lam)


class TAMLEntropy(MAML):
    r"""TAML, entropy-maximisation form (Jamal & Qi, 2019), for classification.

    Each task's meta-objective is MAML's plus λ times the change of the entropy of the predicted label
    distribution on the task's query inputs:

    .. math:: L^q_T(\theta'_T) + \lambda\big(-H_T(f_\theta) + H_T(f_{\theta'_T})\big).

    Minimising it asks the initial model θ to be *unsure* (high entropy: no bias towards any label
    before it has seen the task) and the adapted model θ' to be sure. With ``lam=0`` it is exactly
    :class:`MAML`. Metrics add ``entropy_before`` and ``entropy_after`` (nats).
    """

    name = "TAML-entropy"

    def __init__(self, model: FunctionalModel, *, alpha: float = 0.01, inner_steps: int = 1, lam: float = 0.1,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy_loss,
                 vectorize: bool | None = None):
        if loss is mse_loss:
            raise ConfigError("the entropy form of TAML needs a classifier (the entropy of predicted labels): use "
                              "it with the cross-entropy loss, or use TAMLInequality for regression")
        super().__init__(model, alpha=alpha, inner_steps=inner_steps, loss=loss, vectorize=vectorize)
        self.lam = _check_lambda(lam)

    def check_batch(self, batch: TaskBatch, where: str = "the task batch") -> None:
        super().check_batch(batch, where)
        if batch.y_support.is_floating_point():
            raise ConfigError(f"{self.name} needs classification tasks (integer labels), but {where} has "
                              f"real-valued targets: use TAMLInequality for regression")

    def _query_loss(self, params, xs, ys, xq, yq):
        adapted = self.adapt(params, xs, ys, first_order=self.first_order)
        logits_after = self.model(adapted, xq)
        logits_before = self.model(params, xq)
        after = self.loss(logits_after, yq)
        h_before, h_after = prediction_entropy(logits_before), prediction_entropy(logits_after)
        objective = after + self.lam * (h_after - h_before)
        return objective, {"loss": after.detach(), "loss_before": self.loss(logits_before, yq).detach(),
                           "entropy_before": h_before.detach(), "entropy_after": h_after.detach()}

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "lam": self.lam}

    def describe(self) -> str:
        return f"{super().describe()[:-1]}, λ={self.lam:g})"


class TAMLInequality(MAML):
    r"""TAML, inequality-minimisation form (Jamal & Qi, 2019), for regression and classification.

    The meta-objective of a batch of B tasks is MAML's plus λ times the inequality of the initial model's
    losses on those tasks:

    .. math:: \frac1B\sum_T L^q_T(\theta'_T) + \lambda\, I\big(\{L^q_T(f_\theta)\}_{T}\big),

    with :math:`I` one of the measures of :mod:`metalearn_core.inequality` (``measure``: ``theil``, ``ge``,
    ``atkinson``, ``gini``, ``varlog``). The losses :math:`L^q_T(f_\theta)` are on each task's query set,
    before adaptation (the ``loss_before`` metric every learner reports). Because :math:`I` couples the tasks
    of a batch, its gradient is taken through the whole batch, not task by task. With ``lam=0`` it is
    exactly :class:`MAML`. Metrics add ``inequality`` (the measure's value on the batch).

    Args:
        lam: λ ≥ 0.
        measure: the inequality measure.
        ge_alpha: α of GE(α) (any finite number; 0 and 1 are the mean log deviation and Theil).
        atkinson_epsilon: ε ≥ 0 of the Atkinson index.
    """

    name = "TAML-inequality"

    def __init__(self, model: FunctionalModel, *, alpha: float = 0.01, inner_steps: int = 1, lam: float = 0.1,
                 measure: str = "theil", ge_alpha: float = 2.0, atkinson_epsilon: float = 0.5,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse_loss,
                 vectorize: bool | None = None):
        super().__init__(model, alpha=alpha, inner_steps=inner_steps, loss=loss, vectorize=vectorize)
        self.lam = _check_lambda(lam)
        self.measure = check_measure(measure)
        # validates the measure's parameter now, not at the first meta-step
        inequality(torch.ones(2), self.measure, ge_alpha=ge_alpha, atkinson_epsilon=atkinson_epsilon)
        self.ge_alpha, self.atkinson_epsilon = float(ge_alpha), float(atkinson_epsilon)

    def inequality(self, losses: torch.Tensor) -> torch.Tensor:
        """This learner's inequality measure of a 1-D tensor of task losses."""
        return inequality(losses, self.measure, ge_alpha=self.ge_alpha, atkinson_epsilon=self.atkinson_epsilon)

    def _meta_gradient(self, params, batch):
        grads, metrics = super()._meta_gradient(params, batch)

        def term(p):
            losses = self._map_tasks(self.task_loss, p, batch.x_query, batch.y_query)
            value = self.inequality(losses)
            return self.lam * value, value.detach()

        extra, value = grad(term, has_aux=True)(params)
        metrics["inequality"] = value
        return {k: g + extra[k] for k, g in grads.items()}, metrics

    def hyperparameters(self) -> dict:
        h = {**super().hyperparameters(), "lam": self.lam, "measure": self.measure}
        if self.measure == "ge":
            h["ge_alpha"] = self.ge_alpha
        if self.measure == "atkinson":
            h["atkinson_epsilon"] = self.atkinson_epsilon
        return h

    def describe(self) -> str:
        label = describe_measure(self.measure, ge_alpha=self.ge_alpha, atkinson_epsilon=self.atkinson_epsilon)
        return f"{super().describe()[:-1]}, λ={self.lam:g} × {label})"


# ---- learned update rules ------------------------------------------------------------------------------------

class _LearnedRule(MAML):
    """MAML whose inner step is a learned rule: the rule's meta-parameters travel in the params dict next to the
    network's (a :class:`~metalearn_core.models.WithMetaParameters` model) and are not adapted by the inner
    loop. Subclasses say how one parameter tensor moves, in :meth:`_step`."""

    def inner_step(self, params, x, y, alpha=None, first_order=False, trainable=None):
        scale = 1.0 if alpha is None else alpha / self.alpha
        net, meta = self.model.split(params)
        g = grad(lambda p: self.task_loss({**p, **meta}, x, y))(net)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        new = {k: self._step(meta, k, p, g[k], scale) if trainable is None or k in trainable else p
               for k, p in net.items()}
        return {**new, **meta}

    @abc.abstractmethod
    def _step(self, meta: Params, name: str, p: torch.Tensor, g: torch.Tensor, scale: float) -> torch.Tensor:
        """The new value of network parameter ``name`` (value ``p``, gradient ``g``); ``scale`` is the test-time
        α over the learner's α (1 unless ``adapt`` is given another α)."""


class MetaSGD(_LearnedRule):
    r"""Meta-SGD (Li et al., 2017): the inner learning rate is learned, one per network parameter.

    The inner step is :math:`\theta' = \theta - \boldsymbol\alpha\circ\nabla_\theta L^s_T(\theta)`, with
    :math:`\boldsymbol\alpha` a tensor of the shape of θ, meta-learned with θ by the same outer optimiser
    (its entries may grow, shrink, or turn negative: the direction of the step is learned too). The rates
    live in the parameter dict under ``"lr." + name`` (see
    :class:`~metalearn_core.models.WithMetaParameters`), start at ``alpha`` everywhere, and are not adapted by
    the inner loop. At initialisation Meta-SGD is therefore exactly :class:`MAML`.

    A test-time ``alpha`` other than the learner's (e.g. ``adapt(..., alpha=0.02)``) scales all learned
    rates by ``alpha / self.alpha``; use :meth:`rates` to read them.
    """

    name = "Meta-SGD"
    PREFIX = "lr."

    def __init__(self, model: FunctionalModel, *, alpha: float = 0.01, inner_steps: int = 1,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse_loss,
                 vectorize: bool | None = None):
        if not isinstance(model, FunctionalModel):
            raise TypeError(f"model must be a metalearn_core FunctionalModel (e.g. MLP), got {type(model).__name__}")
        a0 = check_positive("inner learning rate α (alpha)", alpha, hint="e.g. alpha=0.01")
        prefix = self.PREFIX
        shapes = {prefix + k: v for k, v in model.param_shapes().items()}

        def init_rates(params, seed, dtype):
            return {prefix + k: torch.full_like(v, a0) for k, v in params.items()}

        super().__init__(WithMetaParameters(model, shapes, init_rates, "Meta-SGD learning rates"),
                         alpha=a0, inner_steps=inner_steps, loss=loss, vectorize=vectorize)

    def rates(self, params: Params) -> Params:
        """The learned per-parameter learning rates, keyed by the network's parameter names."""
        return {k[len(self.PREFIX):]: v for k, v in self.model.split(params)[1].items()}

    def _step(self, meta, name, p, g, scale):
        return p - scale * meta[self.PREFIX + name] * g

    def describe(self) -> str:
        s = "step" if self.inner_steps == 1 else "steps"
        return f"{self.name} (learned α per parameter, starting at {self.alpha:g}; {self.inner_steps} inner {s})"


class LearnedUpdate(_LearnedRule):
    r"""Gradient descent plus a meta-learned correction direction:

    .. math:: \theta_{t+1} = \theta_t - \alpha\nabla L^s_T(\theta_t) + \gamma\, g_\phi(\theta_t, T).

    (The sources write β for the weight of the correction; this book keeps β for the outer learning rate
    and calls it γ.) :math:`g_\phi` is a small network applied to every coordinate of every parameter
    tensor separately, with weights φ shared by all coordinates, so it has 4·``hidden`` + 1 + ``hidden``
    parameters whatever the size of the model. For coordinate i of tensor W it sees the task's gradient
    statistics

    * :math:`u_1 = \partial_i L / r_W`, the gradient relative to :math:`r_W`, the root mean square of the
      gradient over W (the *direction*),
    * :math:`u_2 = \tfrac14\ln r_W` (how steep the loss is along this tensor: the *scale*),
    * :math:`u_3 = \theta_i` (where the parameter is),

    and outputs :math:`g_i = r_W\cdot\big(w_2^\top\tanh(W_1 u + b_1) + b_2\big)`, a correction in units of
    the gradient. The last layer starts at zero, so before meta-training the rule *is* gradient descent
    and the learner is exactly :class:`MAML`; φ (``"update.*"`` in the parameter dict) is meta-trained
    with θ, through the whole inner loop (second order, as MAML). A test-time ``alpha`` other than the
    learner's scales both terms by ``alpha / self.alpha``.

    Args:
        gamma: weight γ of the correction (default: ``alpha``, so a correction of 1 equals one more
            gradient step's worth of movement).
        hidden: width of :math:`g_\phi`'s hidden layer.
    """

    name = "LearnedUpdate"
    PREFIX = "update."

    def __init__(self, model: FunctionalModel, *, alpha: float = 0.01, inner_steps: int = 1,
                 gamma: float | None = None, hidden: int = 16,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse_loss,
                 vectorize: bool | None = None):
        if not isinstance(model, FunctionalModel):
            raise TypeError(f"model must be a metalearn_core FunctionalModel (e.g. MLP), got {type(model).__name__}")
        a0 = check_positive("inner learning rate α (alpha)", alpha, hint="e.g. alpha=0.01")
        self.gamma = a0 if gamma is None else check_positive("weight γ of the learned direction (gamma)", gamma)
        self.hidden = check_positive_int("hidden", hidden)
        h, prefix = self.hidden, self.PREFIX
        shapes = {prefix + "w1": (h, 3), prefix + "b1": (h,), prefix + "w2": (h,), prefix + "b2": ()}

        def init_update(params, seed, dtype):
            gen = torch.Generator().manual_seed(10_007 + int(seed))
            return {prefix + "w1": torch.randn(h, 3, generator=gen, dtype=dtype) / math.sqrt(3.0),
                    prefix + "b1": torch.zeros(h, dtype=dtype), prefix + "w2": torch.zeros(h, dtype=dtype),
                    prefix + "b2": torch.zeros((), dtype=dtype)}

        super().__init__(WithMetaParameters(model, shapes, init_update, f"learned update direction ({h} hidden)"),
                         alpha=a0, inner_steps=inner_steps, loss=loss, vectorize=vectorize)

    def direction(self, update: Params, g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """:math:`g_\\phi` for one parameter tensor ``p`` with gradient ``g`` (same shape as both)."""
        pre = self.PREFIX
        rms = torch.sqrt((g * g).mean() + 1e-12)
        u = torch.stack([g / rms, (0.25 * torch.log(rms)).expand_as(g), p], dim=-1)       # [*shape, 3]
        hidden = torch.tanh(u @ update[pre + "w1"].T + update[pre + "b1"])                  # [*shape, h]
        return rms * (hidden @ update[pre + "w2"] + update[pre + "b2"])

    def _step(self, meta, name, p, g, scale):
        return p - scale * self.alpha * g + scale * self.gamma * self.direction(meta, g, p)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "gamma": self.gamma, "hidden": self.hidden}

    def describe(self) -> str:
        s = "step" if self.inner_steps == 1 else "steps"
        return (f"{self.name} (α={self.alpha:g} + γ={self.gamma:g} × learned direction, {self.inner_steps} inner {s})")


ALGORITHMS: dict[str, type[MetaLearner]] = {
    "maml": MAML, "fomaml": FOMAML, "reptile": Reptile, "joint": JointTraining, "protonet": ProtoNet,
    "tamlentropy": TAMLEntropy, "tamlinequality": TAMLInequality, "metasgd": MetaSGD,
    "learnedupdate": LearnedUpdate,
}


def make_learner(name: str, model: FunctionalModel, **kwargs) -> MetaLearner:
    """Build an algorithm by name (``maml``, ``fomaml``, ``reptile``, ``joint``, ``protonet``, ``taml-entropy``,
    ``taml-inequality``, ``meta-sgd``, ``learned-update``; case-insensitive, dashes optional)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[key](model, **kwargs)
