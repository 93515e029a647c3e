r"""Data for transfer learning (chapter 8): a source domain to pre-train on, a cross-domain target, episodes.

* :class:`PooledClasses`: every class of a set of labelled images as **one** many-way classification; each
  "task" it samples is a mini-batch with global labels, which is what :class:`~metalearn_core.algorithms.
  JointTraining` pre-trains on through the one training loop. :func:`omniglot_source` builds it from the
  training alphabets of chapter 7 (with the 90° rotations as new classes, as the meta-learners had).
* :func:`load_digits`: the cross-domain target, scikit-learn's bundled 8×8 handwritten digits (1,797 images
  of 10 classes, from the UCI repository; no download), upsampled to Omniglot's 28×28, ink 1.0.
* :class:`LabelledImageTasks`: N-way K-shot episodes from any labelled image set (the digits).
* :func:`imagenet_to_cifar10`: the classic transfer example — torchvision's ImageNet ResNet-18 fine-tuned on
  CIFAR-10 — for readers who are online; offline it raises :class:`OnlineOnlyError` saying what it needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import OmniglotImages
from .errors import ConfigError, DataError, MetaLearnError, check_positive_int
from .omniglot import SPLITS_V1, ImageEpisodes, OmniglotTasks, accuracy, cross_entropy_loss
from .tasks import TaskBatch, TaskFamily

__all__ = ["PooledClasses", "omniglot_source", "load_digits", "split_per_class", "LabelledImageTasks",
           "OnlineOnlyError", "imagenet_to_cifar10", "DIGITS_SIZE"]

#: Side of the digit images after upsampling (Omniglot's).
DIGITS_SIZE = 28


class PooledClasses(TaskFamily):
    """All classes of labelled images as one classification problem, sampled as mini-batches.

    ``sample(B, shots=s, queries=q)`` returns B "tasks" of ``s + q`` images drawn uniformly (without
    replacement within a task) from the whole pool, labelled with their **global** class (``0..n_classes-1``).
    There is no support/query distinction for pre-training: :class:`~metalearn_core.algorithms.JointTraining`
    uses both parts as one batch.

    Args:
        images: ``[n, C, H, W]`` float images.
        labels: ``[n]`` int64 class labels, ``0..n_classes-1``.
        name: the budget preset table of pre-training runs.
    """

    metric = "accuracy"
    default_shots = 32
    default_queries = 32
    eval_queries = 32
    loss = staticmethod(cross_entropy_loss)
    accuracy = staticmethod(accuracy)

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str = "transfer_pretrain"):
        if images.dim() != 4:
            raise ConfigError(f"PooledClasses takes images [n, C, H, W], got shape {list(images.shape)}")
        if labels.shape != (images.shape[0],) or labels.dtype != torch.long:
            raise ConfigError(f"PooledClasses takes one int64 label per image, got {list(labels.shape)} {labels.dtype}")
        self.images, self.labels, self.name = images, labels, name
        self.n_classes = int(labels.max()) + 1
        self.in_features = tuple(images.shape[1:])
        self.out_features = self.n_classes

    def _sample(self, n_tasks, shots, queries, generator, dtype):
        m = shots + queries
        if m > self.images.shape[0]:
            raise ConfigError(f"a batch of {m} images but the pool holds {self.images.shape[0]}")
        idx = torch.rand(n_tasks, self.images.shape[0], generator=generator).argsort(1)[:, :m]
        x, y = self.images[idx].to(dtype), self.labels[idx]
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])

    def __repr__(self) -> str:
        return f"PooledClasses({self.images.shape[0]} images of {self.n_classes} classes)"


def omniglot_source(images: OmniglotImages, rotations: bool = True, drawers: slice | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training alphabets of chapter 8 (those of :data:`~metalearn_core.omniglot.SPLITS_V1`, the split chapter 8
    ran with) as labelled images: ``(x [n, 1, s, s], y [n])``.

    Class c is the character of :class:`~metalearn_core.omniglot.OmniglotTasks`' train split class c (with
    ``rotations``, the 4 quarter turns of each character are 4 classes: 178 characters give 712 classes);
    every class has all its drawings (or those picked by ``drawers``).
    """
    split = OmniglotTasks(images, "train", ways=2, rotations=rotations, splits=SPLITS_V1)
    chars, turns = split.class_characters, split.class_rotations
    pics = images.images[chars] if drawers is None else images.images[chars][:, drawers]   # [C, D, s, s]
    x = pics.float() / 255
    for t in range(1, 4):
        mask = turns == t
        if mask.any():
            x[mask] = torch.rot90(x[mask], t, dims=(-2, -1))
    c, d, s, _ = x.shape
    return x.reshape(c * d, 1, s, s), torch.arange(c).repeat_interleave(d)


def load_digits(size: int = DIGITS_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits as ``(x [1797, 1, size, size] in [0, 1], y [1797])``.

    The 8×8 images (16 grey levels, ink high, like Omniglot's ink 1.0) are scaled to [0, 1] and upsampled
    bilinearly to ``size``×``size``. The data ship inside scikit-learn: nothing is downloaded.
    """
    size = check_positive_int("size", size, minimum=8)
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError:
        raise DataError("the digits come with scikit-learn, which is not installed: pip install scikit-learn "
                        "(make test / make book install it)") from None
    bunch = _sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.tensor(bunch.target, dtype=torch.long)


def split_per_class(y: torch.Tensor, fractions: tuple[float, ...], seed: int = 0) -> list[torch.Tensor]:
    """Indices splitting a labelled set into parts of the given fractions *within every class* (stratified),
    shuffled with ``seed``; the last part takes what rounding leaves."""
    if abs(sum(fractions) - 1) > 1e-9 or any(f <= 0 for f in fractions):
        raise ConfigError(f"fractions must be positive and sum to 1, got {fractions}")
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for c in torch.unique(y):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        start = 0
        for i, f in enumerate(fractions):
            stop = idx.numel() if i == len(fractions) - 1 else start + int(round(f * idx.numel()))
            parts[i].append(idx[start:stop])
            start = stop
    return [torch.cat(p).sort().values for p in parts]


class LabelledImageTasks(ImageEpisodes):
    """N-way K-shot episodes from a labelled image set: N classes drawn at random, K support and Q query images
    each, labels 0..N−1 in a fresh random order per episode (the layout of
    :class:`~metalearn_core.omniglot.OmniglotTasks`).

    Args:
        images: ``[n, C, H, W]``; labels: ``[n]`` int64.
        ways: N (at most the number of classes).
        name: a label for tables and presets.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, ways: int = 5, name: str = "digits"):
        if images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ConfigError(f"LabelledImageTasks takes images [n, C, H, W] and labels [n], got "
                              f"{list(images.shape)} and {list(labels.shape)}")
        self.images, self.labels, self.name = images, labels, name
        self.classes = torch.unique(labels)
        self.ways = check_positive_int("ways (N)", ways, minimum=2, hint="a classification task needs two classes")
        if self.ways > self.classes.numel():
            raise ConfigError(f"ways={ways} but these images have only {self.classes.numel()} classes; use "
                              f"ways <= {self.classes.numel()}")
        self.by_class = [(labels == c).nonzero().flatten() for c in self.classes]
        self.smallest = min(int(i.numel()) for i in self.by_class)
        self.in_features = tuple(images.shape[1:])
        self.out_features = self.ways

    def _sample(self, n_tasks, shots, queries, generator, dtype):
        if shots + queries > self.smallest:
            raise ConfigError(f"shots + queries = {shots} + {queries} per class, but the smallest class has "
                              f"{self.smallest} images; use shots + queries <= {self.smallest}")
        n, k, q = self.ways, shots, queries
        classes = torch.rand(n_tasks, self.classes.numel(), generator=generator).argsort(1)[:, :n]
        xs, xq = [], []
        for b in range(n_tasks):
            sup, qry = [], []
            for c in classes[b].tolist():
                pool = self.by_class[c]
                pick = pool[torch.randperm(pool.numel(), generator=generator)[:k + q]]
                sup.append(pick[:k])
                qry.append(pick[k:])
            xs.append(torch.cat(sup))
            xq.append(torch.cat(qry))
        xs, xq = torch.stack(xs), torch.stack(xq)
        return TaskBatch(self.images[xs].to(dtype), self.episode_labels(n_tasks, n, k),
                         self.images[xq].to(dtype), self.episode_labels(n_tasks, n, q),
                         {"classes": self.classes[classes]})

    def __repr__(self) -> str:
        return (f"LabelledImageTasks({self.name}: {self.ways}-way episodes from {self.images.shape[0]} images of "
                f"{self.classes.numel()} classes)")


class OnlineOnlyError(MetaLearnError):
    """An optional example needs the internet (or a package) that this machine does not have."""


def imagenet_to_cifar10(*, data_dir: str = "~/.cache/metalearn/cifar10", train_images: int = 5000,
                        test_images: int = 2000, image_size: int = 64, freeze_stages: int = 0, steps: int = 500,
                        lr: float = 1e-3, head_lr: float = 1e-2, batch_size: int = 64, progress: bool = True):
    """Fine-tune torchvision's ImageNet-pre-trained ResNet-18 on CIFAR-10 with :func:`~metalearn_core.finetune.
    fine_tune`: the transfer example every course shows, for readers who are online.

    The weights (44.7 MB) go through our :class:`~metalearn_core.models.ResNet` (the same layout:
    :meth:`~metalearn_core.models.ResNet.from_torchvision`); CIFAR-10 (170 MB) is downloaded to ``data_dir``
    by torchvision. ``train_images`` / ``test_images`` take the first images of each set (stratification is
    not needed: CIFAR-10's order is random), resized to ``image_size`` and normalised with ImageNet's
    channel statistics. Returns ``(FineTuneResult, test accuracy)``.

    Raises:
        OnlineOnlyError: torchvision is not installed, or the weights or the dataset cannot be downloaded;
            the message says what is needed. Nothing in the book's build or tests calls this.
    """
    from .finetune import fine_tune
    from .models import ResNet

    need = ("it needs torchvision (pip install torchvision, matching your torch) and an internet connection to "
            "download ResNet-18's ImageNet weights (44.7 MB) and CIFAR-10 (170 MB)")
    try:
        import torchvision
        from torchvision import transforms
    except ImportError:
        raise OnlineOnlyError(f"the ImageNet → CIFAR-10 example is optional and skipped here: {need}") from None
    import os

    try:
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        state = weights.get_state_dict(progress=progress)
        root = os.path.expanduser(data_dir)
        tf = transforms.Compose([transforms.Resize(image_size), transforms.ToTensor(),
                                 transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        train = torchvision.datasets.CIFAR10(root, train=True, download=True, transform=tf)
        test = torchvision.datasets.CIFAR10(root, train=False, download=True, transform=tf)
    except (OSError, RuntimeError) as exc:   # URLError is an OSError; torchvision raises RuntimeError on bad files
        raise OnlineOnlyError(f"the ImageNet → CIFAR-10 example could not get its data ({type(exc).__name__}: "
                              f"{str(exc)[:120]}); {need}") from None
    net = ResNet(3, 1000, 64, (2, 2, 2, 2), image_size, stem="imagenet")
    params, stats = net.from_torchvision(state)

    def take(ds, n):
        xs, ys = zip(*(ds[i] for i in range(min(n, len(ds)))))
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    x, y = take(train, train_images)
    xt, yt = take(test, test_images)
    result = fine_tune(net, params, stats, x, y, classes=10, steps=steps, lr=lr, lrs={"head": head_lr},
                       freeze_stages=freeze_stages, bn="frozen", batch_size=batch_size, progress=progress,
                       desc="ResNet-18 on CIFAR-10")
    return result, result.accuracy(xt, yt)
