r"""N-way K-shot classification episodes drawn from Omniglot: :class:`OmniglotTasks`.

An *episode* (a task) picks N characters at random, relabels them 0..N−1 in a random order, and shows K
drawings of each as the support set and Q *other* drawings of each as the query set. A learner that adapts on
the support set is scored on the query set. Because the labels are re-drawn for every episode, "class 3" means
nothing across episodes: the only thing worth learning is how to learn a new character from K examples.

Characters are split between meta-training, meta-validation and meta-testing **by alphabet**, so that test
episodes ask about scripts never seen in training (a harder and more honest test than splitting characters
of the same alphabets). With the two small background sets shipped with the book (242 characters, 8
alphabets) the split is:

====================  ==========================================================================  ==========
split                 alphabets                                                                   characters
====================  ==========================================================================  ==========
``"train"``           Balinese, Greek, Japanese_(katakana), Korean, Latin                         161
``"val"``             Early_Aramaic                                                               22
``"test"``            Sanskrit, Tagalog                                                           59
====================  ==========================================================================  ==========

Why these: validation needs 20 characters for 20-way episodes (Early_Aramaic has 22); a test figure must not
rest on one alphabet, so two alphabets are held out for the 5-shot test (Tagalog's 17 characters suffice
for 5-way episodes), and the 1-shot tests use :class:`OneShotRunTasks`, episodes drawn inside Lake et al.'s 20
one-shot runs, whose characters come from 10 *evaluation* alphabets that no background character touches.
Greek and Latin, whose letters resemble each other, stay together in training. Greek and Latin are in both
small archives but :func:`~metalearn_core.data.load_omniglot` keeps one copy, so every character belongs to
exactly one split.

:data:`SPLITS_RUNS` trains the networks that are tested only inside the one-shot runs: every background
alphabet but the validation one (220 characters), since none of the runs' alphabets is among them.

:data:`SPLITS_V1` is the earlier split (6 training alphabets, Sanskrit alone for testing) with which chapters
6 and 8 ran their Omniglot comparisons; it stays until they are re-run under the cross-alphabet protocol.

>>> from metalearn_core.data import load_omniglot
>>> family = OmniglotTasks(load_omniglot(), "train", ways=5)          # doctest: +SKIP
>>> batch = family.sample(4, shots=1, queries=15, seed=0)              # doctest: +SKIP
>>> batch.x_support.shape, batch.y_support.shape                       # doctest: +SKIP
(torch.Size([4, 5, 1, 28, 28]), torch.Size([4, 5]))
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .data import OmniglotImages
from .errors import ConfigError, check_positive_int
from .tasks import TaskBatch, TaskFamily

__all__ = [
    "SPLITS_V1",
    "RUN_ALPHABETS",
    "OneShotRunTasks",
    "TRAIN_ALPHABETS",
    "VAL_ALPHABETS",
    "TEST_ALPHABETS",
    "SPLITS",
    "SPLITS_RUNS",
    "ImageEpisodes",
    "OmniglotTasks",
    "cross_entropy_loss",
    "accuracy",
]

#: Meta-training alphabets of the small background sets (161 characters).
TRAIN_ALPHABETS = ("Balinese", "Greek", "Japanese_(katakana)", "Korean", "Latin")
#: Meta-validation alphabet (22 characters): for choosing hyper-parameters and the checkpoint to keep.
VAL_ALPHABETS = ("Early_Aramaic",)
#: Meta-test alphabets of the background sets (42 + 17 characters): the 5-shot tests, reported once, at the end.
TEST_ALPHABETS = ("Sanskrit", "Tagalog")
#: The default split of :class:`OmniglotTasks`, split name -> alphabets.
SPLITS: dict[str, tuple[str, ...]] = {"train": TRAIN_ALPHABETS, "val": VAL_ALPHABETS, "test": TEST_ALPHABETS}
#: The earlier split (178 training characters with Tagalog, Sanskrit alone for testing) that chapters 6 and 8
#: ran with; they pass it explicitly until they are re-run under the cross-alphabet protocol.
SPLITS_V1: dict[str, tuple[str, ...]] = {
    "train": ("Balinese", "Greek", "Japanese_(katakana)", "Korean", "Latin", "Tagalog"),
    "val": ("Early_Aramaic",), "test": ("Sanskrit",)}
#: The split of the networks tested only inside the one-shot runs (whose alphabets are not in the background
#: sets at all): every background alphabet but the validation one trains them (220 characters), as Lake et al.'s
#: runs allow; their test split is empty.
SPLITS_RUNS: dict[str, tuple[str, ...]] = {"train": TRAIN_ALPHABETS + TEST_ALPHABETS, "val": VAL_ALPHABETS,
                                           "test": ()}
#: The evaluation alphabet of each of the 20 official one-shot runs (two runs per alphabet), as listed in
#: ``lake-evaluation/run_alphabets.txt`` of J. Valmadre's ``omniglot-eval`` repository; ``all_runs.zip`` itself
#: does not name them.
RUN_ALPHABETS = ("Atlantean", "Atlantean", "Ge_ez", "Ge_ez", "Glagolitic", "Glagolitic", "Gurmukhi", "Gurmukhi",
                 "Kannada", "Kannada", "Malayalam", "Malayalam", "Manipuri", "Manipuri",
                 "Old_Church_Slavonic_(Cyrillic)", "Old_Church_Slavonic_(Cyrillic)", "Tengwar", "Tengwar",
                 "Tibetan", "Tibetan")


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy :math:`-\frac1n\sum_i \log \mathrm{softmax}(z_i)_{y_i}` of logits ``[n, N]`` and
    integer labels ``[n]`` (any leading dimensions are flattened together)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of examples whose largest logit is at the true label: logits ``[..., n, N]``, labels ``[..., n]``."""
    return (logits.argmax(-1) == labels).to(logits.dtype if logits.is_floating_point() else torch.float32).mean()


class ImageEpisodes(TaskFamily):
    """What every family of N-way K-shot image-classification episodes shares (:class:`OmniglotTasks`,
    :class:`~metalearn_core.transfer.LabelledImageTasks`): cross-entropy loss, accuracy as the metric, 1 shot and
    15 queries per class by default, 20 test episodes adapted at a time, and labels grouped by class."""

    metric = "accuracy"
    default_shots = 1
    default_queries = 15
    eval_queries = 15
    eval_chunk = 20
    loss = staticmethod(cross_entropy_loss)
    accuracy = staticmethod(accuracy)

    @staticmethod
    def episode_labels(n_tasks: int, ways: int, per_class: int) -> torch.Tensor:
        """``[n_tasks, ways*per_class]`` labels ``[0]*per_class + [1]*per_class + ... + [ways-1]*per_class``."""
        return torch.arange(ways).repeat_interleave(per_class).expand(n_tasks, -1).clone()


class OmniglotTasks(ImageEpisodes):
    """N-way K-shot episodes of one alphabet split of Omniglot.

    Args:
        images: characters from :func:`~metalearn_core.data.load_omniglot`.
        split: ``"train"``, ``"val"`` or ``"test"``; which alphabets each holds is given by ``splits``.
        ways: N, the number of classes per episode (the models' number of outputs, ``out_features``).
        rotations: train split only: add copies of every character rotated by 90°, 180° and 270° as new
            classes (Finn et al., 2017, after Santoro et al., 2016), which multiplies the classes by four.
            A rotated class is rotated in both its support and its query images.
        splits: split name -> alphabets (default :data:`SPLITS`); every alphabet in ``images`` must be in
            exactly one split. Pass your own when loading other archives (e.g. the full sets).
        within_alphabet: draw every episode's N characters from one alphabet (Lake et al.'s "within-alphabet"
            episodes, harder than mixing scripts). Episodes then cycle through the split's alphabets from a
            random start, so every alphabet gets its share, and ``info["group"]`` ``[B]`` holds each episode's
            alphabet (an index into :attr:`group_names`): evaluation can then give an interval over alphabets
            or report each alphabet's mean.

    :meth:`~metalearn_core.tasks.TaskFamily.sample` takes ``shots`` and ``queries`` **per class**
    (``shots + queries <= 20``, the drawings of a character) and returns a
    :class:`~metalearn_core.tasks.TaskBatch` with

    * ``x_support`` ``[B, N*K, 1, size, size]`` and ``x_query`` ``[B, N*Q, 1, size, size]`` float in [0, 1],
      ink 1.0;
    * ``y_support`` ``[B, N*K]`` and ``y_query`` ``[B, N*Q]`` int64 labels in 0..N−1, grouped by label:
      ``y_support[b] = [0]*K + [1]*K + ... + [N-1]*K`` (which character gets which label is random);
    * ``info``: ``classes`` ``[B, N]`` (the class of each label, an index into this split's classes),
      ``characters`` ``[B, N]`` (its index in ``images``), ``rotations`` ``[B, N]`` (quarter turns, 0 without
      rotation), ``support_drawers`` ``[B, N, K]`` and ``query_drawers`` ``[B, N, Q]`` (which drawings were
      used: a class's support and query drawings are always different drawers).

    The loss is :func:`cross_entropy_loss` on logits ``[n, N]``; :attr:`metric` is ``"accuracy"``
    (:func:`accuracy`, also available as the family's ``accuracy``). Evaluation uses ``eval_queries = 15``
    query drawings per class (with up to 5 shots, every one of a character's 20 drawings is used) and adapts
    ``eval_chunk = 20`` test episodes at a time (a convolutional network's activations are large).
    """

    name = "omniglot"

    def __init__(self, images: OmniglotImages, split: str = "train", ways: int = 5, rotations: bool = False,
                 splits: Mapping[str, Sequence[str]] | None = None, within_alphabet: bool = False):
        if not isinstance(images, OmniglotImages):
            raise ConfigError(f"OmniglotTasks needs the OmniglotImages returned by load_omniglot(), got "
                              f"{type(images).__name__}")
        splits = {k: tuple(v) for k, v in (SPLITS if splits is None else splits).items()}
        if split not in splits:
            raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(repr(s) for s in splits)}")
        owner: dict[str, str] = {}
        for name, alphabets in splits.items():
            for a in alphabets:
                if a in owner:
                    raise ConfigError(f"alphabet {a} is in both the {owner[a]!r} and {name!r} splits; give each "
                                      f"alphabet to one split so no character is in two")
                owner[a] = name
        orphans = sorted(set(images.alphabets) - set(owner))
        if orphans:
            raise ConfigError(f"alphabet(s) {', '.join(orphans)} of these images are in no split; pass "
                              f"splits={{'train': [...], 'val': [...], 'test': [...]}} naming every alphabet")
        if not isinstance(rotations, bool):
            raise ConfigError(f"rotations must be True or False, got {rotations!r}")
        if rotations and split != "train":
            raise ConfigError(f"rotations=True is a data augmentation of meta-training, but split={split!r}: use "
                              f"rotations=False for the {split!r} split")
        self.images, self.split, self.rotations = images, split, rotations
        self.alphabets = tuple(a for a in splits[split] if a in set(images.alphabets))
        wanted = set(self.alphabets)
        chars = torch.tensor([i for i, a in enumerate(images.alphabets) if a in wanted], dtype=torch.long)
        if chars.numel() == 0:
            raise ConfigError(f"the {split!r} split (alphabets {', '.join(splits[split]) or 'none'}) has no "
                              f"characters in these images; load the archives that hold them")
        n_rot = 4 if rotations else 1
        # class c is character chars[c % n_chars] turned by c // n_chars quarter turns
        self.class_characters = chars.repeat(n_rot)
        self.class_rotations = torch.arange(n_rot).repeat_interleave(chars.numel())
        self.ways = check_positive_int("ways (N)", ways, minimum=2, hint="a classification task needs two classes")
        if self.ways > self.n_classes:
            raise ConfigError(f"ways={self.ways} but the {split!r} split has only {self.n_classes} classes "
                              f"({', '.join(self.alphabets)}); use ways <= {self.n_classes}")
        if not isinstance(within_alphabet, bool):
            raise ConfigError(f"within_alphabet must be True or False, got {within_alphabet!r}")
        self.within_alphabet = within_alphabet
        names = [images.alphabets[int(c)] for c in chars]
        self.class_alphabets = torch.tensor([self.alphabets.index(a) for a in names], dtype=torch.long).repeat(n_rot)
        self.group_names = self.alphabets if within_alphabet else ()
        if within_alphabet:
            sizes = {a: names.count(a) * n_rot for a in self.alphabets}
            small = {a: n for a, n in sizes.items() if n < self.ways}
            if small:
                raise ConfigError(f"ways={self.ways} within one alphabet, but {', '.join(f'{a} has {n}' for a, n in small.items())} "
                                  f"classes; use ways <= {min(sizes.values())} or within_alphabet=False")
        self.in_features = (1, images.size, images.size)
        self.out_features = self.ways

    @property
    def n_classes(self) -> int:
        """Classes to draw episodes from: the split's characters, times four with ``rotations``."""
        return self.class_characters.numel()

    @property
    def n_characters(self) -> int:
        """Distinct characters in the split (rotations not counted)."""
        return self.n_classes // (4 if self.rotations else 1)

    def _sample(self, n_tasks, shots, queries, generator, dtype):
        drawers = self.images.n_drawers
        if shots + queries > drawers:
            raise ConfigError(f"shots + queries = {shots} + {queries} per class, but each Omniglot character has "
                              f"only {drawers} drawings; use shots + queries <= {drawers}")
        n, k, q, s = self.ways, shots, queries, self.images.size
        # N distinct classes per episode, in random order: label j is the j-th class drawn, so the labelling
        # is a fresh random permutation in every episode.
        keys = torch.rand(n_tasks, self.n_classes, generator=generator)
        group = None
        if self.within_alphabet:
            # episode b uses alphabet (start + b) mod A: other alphabets' classes sort after all of its own
            n_alpha = len(self.alphabets)
            start = int(torch.randint(n_alpha, (1,), generator=generator))
            group = (start + torch.arange(n_tasks)) % n_alpha
            keys = keys + 2.0 * (self.class_alphabets[None, :] != group[:, None])
        classes = keys.argsort(1)[:, :n]                                                            # [B, N]
        # K + Q distinct drawers per class: the first K are the support, the rest the query.
        picks = torch.rand(n_tasks, n, drawers, generator=generator).argsort(2)[:, :, :k + q]     # [B, N, K+Q]
        chars = self.class_characters[classes]
        turns = self.class_rotations[classes]
        x = self.images.images[chars[:, :, None], picks].to(dtype) / 255                          # [B, N, K+Q, s, s]
        for t in range(1, 4):
            mask = turns == t
            if mask.any():
                x[mask] = torch.rot90(x[mask], t, dims=(-2, -1))
        x = x[:, :, :, None]                                                                       # add the channel
        x_support = x[:, :, :k].reshape(n_tasks, n * k, 1, s, s)
        x_query = x[:, :, k:].reshape(n_tasks, n * q, 1, s, s)
        y_support = self.episode_labels(n_tasks, n, k)
        y_query = self.episode_labels(n_tasks, n, q)
        info = {"classes": classes, "characters": chars, "rotations": turns,
                "support_drawers": picks[:, :, :k], "query_drawers": picks[:, :, k:]}
        if group is not None:
            info["group"] = group
        return TaskBatch(x_support, y_support, x_query, y_query, info)

    def __repr__(self) -> str:
        rot = ", rotations=True" if self.rotations else ""
        within = ", within_alphabet=True" if self.within_alphabet else ""
        return (f"OmniglotTasks(split={self.split!r}, ways={self.ways}, {self.n_classes} classes from "
                f"{', '.join(self.alphabets)}{rot}{within}, {self.images.size}x{self.images.size})")


class OneShotRunTasks(ImageEpisodes):
    """N-way 1-shot test episodes drawn inside Lake et al.'s 20 official one-shot runs: a test across alphabets.

    Each run holds 20 characters of one *evaluation* alphabet (two runs per alphabet, 10 alphabets, see
    :data:`RUN_ALPHABETS`), each drawn twice: once among the run's training images and once among its test
    items. An episode picks a run, N of its 20 characters in random order (label j is the j-th), and for each
    character which of its two drawings is the support example; the other is the query. So every episode has
    exactly one support and one query drawing per class (``shots = queries = 1``), and its characters all come
    from one alphabet that no background character touches. Episodes cycle through the runs from a random
    start, so 600 episodes give every run 30 and every alphabet 60.

    ``info``: ``run`` ``[B]`` (index into the runs), ``group`` ``[B]`` (the run's alphabet, an index into
    :attr:`group_names`), ``characters`` ``[B, N]`` (training-image index within the run) and
    ``support_from_test`` ``[B, N]`` (whether the support drawing is the run's test item).

    Args:
        runs: from :func:`~metalearn_core.data.load_oneshot_runs`.
        ways: N, 2..20.
        alphabets: the alphabet of each run (default :data:`RUN_ALPHABETS`, for the official 20 runs).
    """

    name = "omniglot"
    default_queries = 1
    eval_queries = 1

    def __init__(self, runs, ways: int = 5, alphabets: Sequence[str] | None = None):
        runs = list(runs)
        if not runs or not all(hasattr(r, "train") and hasattr(r, "answers") for r in runs):
            raise ConfigError("OneShotRunTasks needs the list returned by load_oneshot_runs()")
        alphabets = RUN_ALPHABETS if alphabets is None else tuple(alphabets)
        if len(alphabets) != len(runs):
            raise ConfigError(f"{len(runs)} runs but {len(alphabets)} alphabet names; give one alphabet per run "
                              f"(alphabets=...) or load the official 20 runs")
        n_chars = runs[0].train.shape[0]
        self.ways = check_positive_int("ways (N)", ways, minimum=2, hint="a classification task needs two classes")
        if self.ways > n_chars:
            raise ConfigError(f"ways={self.ways} but a one-shot run holds only {n_chars} characters; use ways <= "
                              f"{n_chars}")
        pairs = []
        for r in runs:
            if sorted(r.answers.tolist()) != list(range(n_chars)) or r.test.shape[0] != n_chars:
                raise ConfigError(f"{r.name} does not pair each of its {n_chars} training images with one test item")
            test_of = torch.empty(n_chars, dtype=torch.long)
            test_of[r.answers] = torch.arange(n_chars)
            pairs.append(torch.stack([r.train, r.test[test_of]], 1))                   # [20, 2, 1, s, s]
        self.images = torch.stack(pairs)                                                # [R, 20, 2, 1, s, s]
        self.run_names = tuple(r.name for r in runs)
        self.group_names = tuple(dict.fromkeys(alphabets))
        self.run_groups = torch.tensor([self.group_names.index(a) for a in alphabets], dtype=torch.long)
        size = self.images.shape[-1]
        self.in_features = (1, size, size)
        self.out_features = self.ways

    def _sample(self, n_tasks, shots, queries, generator, dtype):
        if shots != 1 or queries != 1:
            raise ConfigError(f"every character of a one-shot run has exactly two drawings, so run episodes have "
                              f"shots=1 and queries=1, got shots={shots}, queries={queries}; use OmniglotTasks "
                              f"on the test alphabets for more shots")
        n_runs, n_chars = self.images.shape[:2]
        start = int(torch.randint(n_runs, (1,), generator=generator))
        run = (start + torch.arange(n_tasks)) % n_runs                                                 # [B]
        chars = torch.rand(n_tasks, n_chars, generator=generator).argsort(1)[:, :self.ways]          # [B, N]
        flip = torch.randint(2, (n_tasks, self.ways), generator=generator)                           # [B, N]
        x = self.images[run[:, None], chars].to(dtype)                                                # [B, N, 2, ...]
        support = x.gather(2, flip.view(n_tasks, self.ways, 1, 1, 1, 1).expand(-1, -1, 1, *x.shape[3:]))[:, :, 0]
        query = x.gather(2, (1 - flip).view(n_tasks, self.ways, 1, 1, 1, 1).expand(-1, -1, 1, *x.shape[3:]))[:, :, 0]
        y = self.episode_labels(n_tasks, self.ways, 1)
        info = {"run": run, "group": self.run_groups[run], "characters": chars, "support_from_test": flip.bool()}
        return TaskBatch(support, y, query, y.clone(), info)

    def __repr__(self) -> str:
        return (f"OneShotRunTasks(ways={self.ways}, {len(self.run_names)} runs of {len(self.group_names)} "
                f"evaluation alphabets, 1 shot and 1 query per class)")
