"""metalearn_core: small, functional, tested meta-learning for the metalearn-book.

>>> import metalearn_core as ml
>>> family = ml.SinusoidTasks()
>>> learner = ml.MAML(ml.MLP((1, 40, 40, 1)), alpha=0.01, inner_steps=1)
>>> result = ml.meta_train(learner, family, budget="quick", seed=0)         # doctest: +SKIP
>>> curve = ml.adaptation_curve(learner, result.params, family, steps=10)   # doctest: +SKIP

Modules: :mod:`~metalearn_core.tasks` (task families), :mod:`~metalearn_core.models` (functional models),
:mod:`~metalearn_core.algorithms` (MAML, FOMAML, Reptile, joint training, ProtoNets, TAML, Meta-SGD, a learned
update rule), :mod:`~metalearn_core.inequality` (TAML's inequality measures),
:mod:`~metalearn_core.training` (the one meta-training loop), :mod:`~metalearn_core.evaluation` (adaptation
curves, 95% CIs),
:mod:`~metalearn_core.data` (the Omniglot archives, checksums, preprocessing, one-shot runs),
:mod:`~metalearn_core.omniglot` (N-way K-shot Omniglot episodes),
:mod:`~metalearn_core.finetune` (fine-tuning a pre-trained ResNet: linear probe, frozen stages, per-stage learning
rates, BatchNorm modes, early stopping), :mod:`~metalearn_core.transfer` (source and cross-domain data),
:mod:`~metalearn_core.checkpoints`, :mod:`~metalearn_core.budgets`, :mod:`~metalearn_core.viz` (plots,
widgets and static sliders), :mod:`~metalearn_core.widgets` (the chapter-4 explorers),
:mod:`~metalearn_core.results` (result rows), :mod:`~metalearn_core.experiments` (what
``python -m metalearn_core reproduce`` runs), :mod:`~metalearn_core.costs` (time and memory of a meta-step)
and :mod:`~metalearn_core.exercises` (answer checkers).
"""

__version__ = "0.1.0"

from .algorithms import (ALGORITHMS, FOMAML, MAML, JointTraining, LearnedUpdate, MetaLearner, MetaSGD, ProtoNet,
                         Reptile, TAMLEntropy, TAMLInequality, make_learner)
from .budgets import BUDGETS, PRESETS, Preset, preset, resolve_budget
from .checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from .errors import (CheckpointError, ConfigError, DataError, DivergenceError, MetaLearnError,
                     ShapeMismatchError)
from .evaluation import AdaptationCurve, adaptation_curve, adaptation_losses, mean_ci95, query_score
from .data import (OmniglotImages, OneShotRun, OneShotScore, find_archive, load_omniglot, load_oneshot_runs,
                   score_oneshot)
from .models import MLP, Conv4, FunctionalModel, LinearModel, ResNet, WithMetaParameters
from .omniglot import OmniglotTasks, OneShotRunTasks
from .tasks import QuadraticTasks, SinusoidTasks, TaskBatch, TaskFamily, make_generator, mse_loss
from .training import History, TrainResult, load_params, meta_train

# submodules used as ml.viz, ml.results...; ml.experiments and ml.widgets are imported where needed
from . import costs, demos, exercises, finetune, inequality, results, transfer, viz  # noqa: E402

__all__ = [
    "__version__",
    "MetaLearner", "MAML", "FOMAML", "Reptile", "JointTraining", "ProtoNet", "TAMLEntropy", "TAMLInequality",
    "MetaSGD", "LearnedUpdate", "ALGORITHMS", "make_learner",
    "BUDGETS", "PRESETS", "Preset", "preset", "resolve_budget",
    "Checkpoint", "load_checkpoint", "save_checkpoint",
    "MetaLearnError", "ConfigError", "ShapeMismatchError", "CheckpointError", "DivergenceError", "DataError",
    "AdaptationCurve", "adaptation_curve", "adaptation_losses", "mean_ci95", "query_score",
    "FunctionalModel", "MLP", "LinearModel", "Conv4", "ResNet", "WithMetaParameters",
    "TaskBatch", "TaskFamily", "SinusoidTasks", "QuadraticTasks", "make_generator", "mse_loss",
    "OmniglotTasks", "OneShotRunTasks", "OmniglotImages", "OneShotRun", "OneShotScore", "find_archive", "load_omniglot",
    "load_oneshot_runs", "score_oneshot",
    "History", "TrainResult", "meta_train", "load_params",
    "viz", "demos", "exercises", "results", "costs", "inequality", "finetune", "transfer",
]
