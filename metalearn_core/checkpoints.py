"""Saving and loading trained parameters with the metadata needed to trust them.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs). It records the model's architecture, the
algorithm and its hyperparameters, the budget, the seed and the package version; loading it into a model
of another architecture, or a file of another format version, is a clear :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError
from .models import FunctionalModel, Params

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "save_checkpoint", "load_checkpoint"]

FORMAT = "metalearn-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    params: Params
    model_spec: dict
    metadata: dict = field(default_factory=dict)
    package_version: str = ""
    buffers: dict = field(default_factory=dict)


def _plain(value):
    """Metadata must survive ``weights_only=True``: keep only JSON types."""
    return json.loads(json.dumps(value, default=str))


def save_checkpoint(path: str | os.PathLike, params: Params, *, model: FunctionalModel,
                    metadata: dict | None = None, buffers: dict | None = None) -> Path:
    """Write ``params`` of ``model`` with ``metadata`` (JSON-able: algorithm, budget, seed...) to ``path``.

    ``buffers``: tensors that are not trained by gradients but belong to the network (a
    :class:`~metalearn_core.models.ResNet`'s BatchNorm statistics), checked against the model when loaded.
    """
    from . import __version__

    model.check_params(params, "the parameters to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": _plain(model.spec()),
        "params": {k: v.detach().cpu().clone() for k, v in params.items()},
        "metadata": _plain(metadata or {}),
        "buffers": {k: v.detach().cpu().clone() for k, v in (buffers or {}).items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, model: FunctionalModel | None = None) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`; with ``model``, check that it fits that model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one with metalearn_core.meta_train(...) and "
                              f"save it with result.save({str(path)!r})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable metalearn checkpoint (corrupt, truncated or not a "
                              f"torch file): {first[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a metalearn checkpoint (no '{FORMAT}' header): was it saved "
                              "with metalearn_core.save_checkpoint?")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}, this metalearn_core "
                              f"reads version {FORMAT_VERSION}: re-create it with this version of the package")
    ckpt = Checkpoint(params=payload["params"], model_spec=payload["model"], metadata=payload.get("metadata", {}),
                      package_version=payload.get("package_version", ""), buffers=payload.get("buffers", {}))
    if model is not None:
        if ckpt.model_spec != model.spec():
            raise CheckpointError(f"{path} was saved for {_describe(ckpt.model_spec)}, not for {model!r}: "
                                  "build the model the checkpoint was trained with, or retrain")
        model.check_params(ckpt.params, f"the parameters in {path}")
        if ckpt.buffers and hasattr(model, "check_stats"):
            model.check_stats(ckpt.buffers, f"the BatchNorm statistics in {path}")
    return ckpt


def _describe(spec: dict) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "class")
    return f"{spec.get('class', 'a model')}({rest})"
