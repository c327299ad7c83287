"""Teacher soft labels: relabel a set with the logits of a network trained on real data.

Much of what a small training set teaches sits in its labels: soft labels from a network
trained on the real data lift even a random real subset a long way (Qin et al., "A Label
is Worth a Thousand Images in Dataset Distillation", NeurIPS 2024; SRe2L and RDED relabel
their sets with a teacher, and DATM starts its learned labels from expert logits).
:func:`relabel` gives every training image of a set (each tile of a multi-formation set)
the logits of one expert of an expert buffer (``datadistill experts``) at a chosen epoch,
divided by a temperature; evaluation then trains on their softmax, the artefact's
soft-label loss. With ``hard_weight`` w > 0 the target is the mixture
w * one-hot(hard label) + (1 - w) * softmax(logits / T), stored as its logarithm: the
cross-entropy with that target is w * CE(hard) + (1 - w) * CE(teacher), the mixture of
Hinton et al.'s distillation loss (with the student at temperature 1, so without their T²
factor), which keeps a set's own labels where a weak teacher disagrees with them. The
teacher is recorded in the artefact's manifest, and :func:`~datadistill.evaluation.evaluate`
labels the random real subset beside it with the same teacher, so that both sides of the
comparison are trained the same way.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from datadistill._device import resolve_device
from datadistill.artefact import TEACHER_KEY, Distilled
from datadistill.data import RealData
from datadistill.errors import ConfigError, DataError, user_stacklevel
from datadistill.experts import ExpertBuffer, calibrate_batch_norm

CHUNK = 256  # images per teacher forward


@dataclass(frozen=True)
class Teacher:
    """Which network labels a set: ``expert`` of the buffer at ``experts`` after ``epoch``
    epochs (-1: its last), its logits divided by ``temperature``, mixed with the one-hot
    hard labels at weight ``hard_weight`` (0: the teacher's alone)."""

    experts: str
    expert: int = 0
    epoch: int = -1
    temperature: float = 1.0
    hard_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.experts, str) or not self.experts:
            raise ConfigError("Give the teacher's expert buffer folder (--experts FOLDER).")
        for name, low in (("expert", 0), ("epoch", -1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"The teacher's {name} must be an int >= {low}; got {v!r}.")
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not (0 < t < math.inf):
            raise ConfigError(f"The temperature must be a positive number; got {t!r}.")
        w = self.hard_weight
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not (0 <= w < 1):
            raise ConfigError(
                f"The hard-label weight must be a number in [0, 1) (0: the teacher's labels "
                f"alone; 1 would drop the teacher: keep the set's hard labels); got {w!r}."
            )

    def network(self, real: RealData, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
        """The teacher network (eval mode) and what identifies it: the buffer (absolute),
        the expert, its file, the epoch read, the temperature, the hard-label weight (when
        above 0) and a checksum of its parameters."""
        buffer = ExpertBuffer(self.experts)
        buffer.check(real)  # trained on this data, with this normalisation and classes
        epoch = buffer.epochs if self.epoch == -1 else self.epoch
        if epoch > buffer.epochs:
            raise ConfigError(
                f"Epoch {epoch} is beyond the {buffer.epochs} epochs of the experts in "
                f"{self.experts}; use -1 (the last) or a smaller epoch."
            )
        net = buffer.network_at(self.expert, epoch, device)
        # the same statistics each time the teacher is loaded: a fixed seed
        calibrate_batch_norm(net, real, torch.Generator().manual_seed(0))
        flat = torch.nn.utils.parameters_to_vector(net.parameters()).detach().double()
        identity = {
            "experts": str(Path(self.experts).resolve()),
            "expert": self.expert,
            "expert_file": buffer.names()[self.expert],
            "epoch": epoch,
            "temperature": float(self.temperature),
            "checksum": float(flat.abs().sum()),
        }
        if self.hard_weight:  # absent when 0, as in sets (and caches) from before it existed
            identity["hard_weight"] = float(self.hard_weight)
        return net, identity

    def labels(self, net: nn.Module, images: Tensor, hard: Tensor) -> Tensor:
        """Soft-label logits for ``images`` whose hard labels are ``hard``: the teacher's
        over the temperature, or the log of their mixture with the one-hot labels."""
        logits = teacher_logits(net, images, self.temperature)
        if not bool(torch.isfinite(logits).all()):
            raise ConfigError(
                f"The teacher's logits over temperature {self.temperature:g} are not finite "
                f"(expert {self.expert} of {self.experts}, "
                f"{'its last epoch' if self.epoch < 0 else f'epoch {self.epoch}'}): the "
                "temperature is too small or the expert diverged; relabel with a larger "
                "temperature or another expert / epoch."
            )
        w = self.hard_weight
        if not w:
            return logits
        # log(w * one-hot + (1 - w) * softmax) in log space: finite even where the
        # teacher's softmax underflows to 0 in float32 (logits ~100 apart)
        hot = torch.nn.functional.one_hot(hard.long().cpu(), logits.shape[1]).bool()
        log_hard = torch.full_like(logits, -math.inf).masked_fill(hot, math.log(w))
        return torch.logaddexp(logits.log_softmax(1) + math.log1p(-w), log_hard)

    @classmethod
    def from_manifest(cls, entry: object) -> Teacher:
        """The teacher an artefact's manifest records (one DataError if malformed)."""
        try:
            if not isinstance(entry, dict):
                raise TypeError(f"a {type(entry).__name__}, not an object")
            return cls(
                experts=entry["experts"],
                expert=entry["expert"],
                epoch=entry["epoch"],
                temperature=entry["temperature"],
                hard_weight=entry.get("hard_weight", 0.0),
            )
        except (TypeError, KeyError, ConfigError) as exc:
            raise DataError(
                f"The artefact's teacher record is damaged ({type(exc).__name__}: {exc}); "
                "relabel the set again with `datadistill relabel`."
            ) from None


def teacher_logits(net: nn.Module, images: Tensor, temperature: float) -> Tensor:
    """``net``'s logits on ``images`` divided by ``temperature``, float32 on the CPU."""
    device = next(net.parameters()).device
    with torch.no_grad():
        out = [net(chunk.to(device)).float().cpu() for chunk in images.split(CHUNK)]
    return torch.cat(out) / temperature


def checked_teacher(
    entry: object,
    real: RealData,
    device: torch.device,
    experts: str | Path | None = None,
) -> tuple[nn.Module, Teacher, dict[str, Any]]:
    """The teacher an artefact records, loaded again (from ``experts`` when its buffer has
    moved there); one DataError if that buffer does not hold the same network (so that a
    baseline is never labelled by another)."""
    teacher = Teacher.from_manifest(entry)
    if experts is not None:
        if not isinstance(experts, (str, os.PathLike)):
            raise ConfigError(
                f"Give the teacher's expert buffer folder as a path; got {experts!r}."
            )
        teacher = replace(teacher, experts=str(experts))
    if not (Path(teacher.experts) / "manifest.json").is_file():
        where = "is not an expert buffer" if experts is not None else "is missing"
        raise DataError(
            f"This set was relabelled by a teacher from {teacher.experts}, which {where}, "
            "and its random baseline must be labelled by the same teacher: restore the buffer "
            "there, say where it is now (--teacher-experts, or teacher_experts=), or evaluate "
            "without baselines (--no-baselines)."
        )
    net, identity = teacher.network(real, device)
    recorded = entry.get("checksum") if isinstance(entry, dict) else None
    if (
        not isinstance(recorded, (int, float))
        or isinstance(recorded, bool)
        or not math.isclose(recorded, identity["checksum"], rel_tol=1e-9)
    ):
        if experts is not None:  # a buffer the user pointed to: it may never have held it
            raise DataError(
                f"The expert buffer {teacher.experts} does not hold the network that "
                "labelled this set (another buffer?); give the buffer the set was relabelled "
                "with, or relabel the set with this one."
            )
        raise DataError(
            f"The teacher's expert buffer {teacher.experts} no longer holds the network that "
            "labelled this set; restore it, or relabel the set with the buffer as it is now."
        )
    return net, teacher, identity


def relabel(
    distilled: Distilled,
    real: RealData,
    experts: str | Path,
    *,
    expert: int = 0,
    epoch: int = -1,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    device: str | torch.device = "auto",
) -> Distilled:
    """``distilled`` with soft labels from a teacher: the logits of ``expert`` of the buffer
    ``experts`` after ``epoch`` epochs (-1: the last) over ``temperature``, one row per
    training image (each tile of a multi-formation set gets its own), mixed with the hard
    labels at weight ``hard_weight`` when it is above 0 (module docstring). The images, hard
    labels and learned lr are kept; earlier soft labels are replaced; the manifest records
    the teacher under ``"teacher"`` (evaluation labels its random baseline likewise) and
    drops the evaluation of the set as it was, which no longer describes it."""
    from datadistill.evaluation.evaluate import check_matches

    check_matches(distilled, real, "relabel")
    teacher = Teacher(str(experts), expert, epoch, temperature, hard_weight)
    if epoch == 0:  # allowed (an ablation), but rarely what is meant
        warnings.warn(
            "epoch 0 is the expert before any training: its labels carry no knowledge of the "
            "data; use -1 (the last epoch) or a trained one unless this is intended.",
            stacklevel=user_stacklevel(),
        )
    net, identity = teacher.network(real, resolve_device(device))
    images, hard, _ = distilled.training_set()
    soft = teacher.labels(net, images.detach(), hard)
    manifest = {k: v for k, v in distilled.manifest.items() if k != "evaluation"}
    manifest[TEACHER_KEY] = identity
    synset = manifest.get("synset")
    if isinstance(synset, dict) and "soft_labels" in synset:  # what the set holds now
        manifest["synset"] = {**synset, "soft_labels": True}
    return replace(distilled, soft_labels=soft, manifest=manifest)


__all__ = ["Teacher", "checked_teacher", "relabel", "teacher_logits"]
