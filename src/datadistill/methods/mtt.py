"""Matching Training Trajectories (MTT; Cazenavette et al., CVPR 2022), with TESLA's
constant-memory gradient (Cui et al., ICML 2023) and DATM's learned soft labels and
difficulty-aligned start epochs (Guo et al., ICLR 2024) as options.

Each iteration picks an expert from a buffer (:mod:`datadistill.experts`) and a start epoch
``t`` below ``max_start_epoch``, trains a student from the expert's parameters at ``t`` for
``syn_steps`` SGD steps on mini-batches of the synthetic set with a learnable learning rate,
and minimises

    ||theta_student_end - theta_expert_(t+M)||^2 / ||theta_expert_t - theta_expert_(t+M)||^2

with M = ``expert_epochs``, updating the images, the learning rate (and the soft labels).
The student is a flat parameter vector run through ``torch.func.functional_call``; the
gradient comes from :mod:`datadistill.functional.unroll`, through the whole unroll
(``unroll="full"``, the reference's way) or step by step with the same result and memory
that does not grow with ``syn_steps`` (``unroll="constant"``).

With ``factor`` above 1 the set is IDC's multi-formation parameterisation
(:class:`~datadistill.synthetic.MultiFormationSet`): the student trains on the decoded
tiles, each with its stored image's (soft) label, and the gradient flows back through the
decoding to the stored pixels.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.func import functional_call

from datadistill.augment import DSA, DSAConfig, one_family_per_batch
from datadistill.data import RealData
from datadistill.errors import ConfigError, user_stacklevel
from datadistill.experts import (
    buffer_manifest,
    calibrate_batch_norm,
    data_fingerprint,
    open_buffer,
)
from datadistill.functional.unroll import FlatParams, unroll_constant_memory, unroll_full
from datadistill.methods.base import (
    HParams,
    Method,
    one_of,
    positive,
    register_method,
    require,
    set_lr,
)
from datadistill.methods.common import INITS, check_ipc, init_synset
from datadistill.synthetic import MultiFormationSet, PixelSet, decode, encode
from datadistill.synthetic.formation import at_tile_resolution, decode_rows

# The learned student lr is kept at least this fraction of its start (lr_teacher): plain SGD
# on it, as in the reference code, can drive it to zero or below on a short or noisy run,
# and a network then cannot be trained with it.
LR_FLOOR = 0.01


@dataclasses.dataclass(frozen=True)
class MTTParams(HParams):
    buffer: str = ""  # expert buffer folder (from `datadistill experts`)
    syn_steps: int = 20  # student SGD steps per iteration
    expert_epochs: int = 2  # M: how far along the expert trajectory the target lies
    max_start_epoch: int = 10  # start epochs are drawn from [min_start_epoch, max_start_epoch)
    min_start_epoch: int = 0
    lr_img: float = 100.0  # SGD learning rate of the synthetic pixels (momentum 0.5)
    lr_lr: float = 1e-5  # SGD learning rate of the learned student lr (kept >= 1% of
    # lr_teacher, LR_FLOOR)
    lr_teacher: float = 0.01  # initial student lr (the experts' lr)
    momentum: float = 0.5
    batch_syn: int = 0  # synthetic images per student step; 0: the whole set
    dsa: bool = True  # augment the student's batches (per-image DSA)
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    unroll: str = "constant"  # "constant" memory or "full" backpropagation (same gradient;
    # constant measured 1.4x faster on CPU and flat in memory, BENCHMARKS.md)
    soft_labels: bool = False  # DATM: learn soft labels initialised from expert logits
    lr_label: float = 5.0  # SGD learning rate of the soft-label logits
    momentum_label: float = 0.9  # SGD momentum of the soft-label logits (DATM's value)
    label_epoch: int = -1  # DATM: expert epoch whose logits initialise the labels; -1: last
    window_grow_to: int = 0  # DATM: let max_start_epoch grow linearly to this; 0: fixed
    window_grow_iterations: int = 1000  # iterations over which the window grows
    init: str = "real"  # "real" (random real images), "kmeans" (real images nearest to
    # per-class k-means centroids, a DREAM-style clustering start), "kmeans-features" (the
    # same in a briefly trained ConvNet's embedding), "herding" (herding's picks in that
    # embedding) or "noise"
    factor: int = 1  # multi-formation (IDC): each stored image tiles factor**2 training
    # images at 1/factor resolution, which share its soft label; 1: plain pixels.
    # batch_syn counts training (decoded) images

    applies_only_with: ClassVar[dict[str, tuple[str, Any]]] = {
        "dsa_strategy": ("dsa", True),
        "lr_label": ("soft_labels", True),
        "momentum_label": ("soft_labels", True),
        "label_epoch": ("soft_labels", True),
    }

    def validate(self) -> None:
        require("MTT", "buffer", self.buffer, isinstance(self.buffer, str), "a folder path")
        for name in (
            "syn_steps",
            "expert_epochs",
            "max_start_epoch",
            "window_grow_iterations",
            "factor",
        ):
            positive("MTT", name, getattr(self, name), int)
        for name in ("min_start_epoch", "batch_syn", "window_grow_to"):
            v = getattr(self, name)
            require("MTT", name, v, isinstance(v, int) and v >= 0, "an int >= 0")
        require(
            "MTT",
            "min_start_epoch",
            self.min_start_epoch,
            self.min_start_epoch < self.max_start_epoch,
            f"below max_start_epoch ({self.max_start_epoch})",
        )
        for name in ("lr_img", "lr_lr", "lr_teacher", "lr_label"):
            positive("MTT", name, getattr(self, name))
        for name in ("momentum", "momentum_label"):
            m = getattr(self, name)
            require(
                "MTT", name, m, isinstance(m, (int, float)) and 0 <= m < 1, "a number in [0, 1)"
            )
        e = self.label_epoch
        require("MTT", "label_epoch", e, isinstance(e, int) and e >= -1, "an int >= -1")
        one_of("MTT", "unroll", self.unroll, ("full", "constant"))
        one_of("MTT", "init", self.init, INITS)


@register_method("mtt")
class MTT(Method):
    """Matching Training Trajectories: match expert parameter trajectories (Cazenavette 2022)."""

    hparams_class = MTTParams
    default_iterations = 5000
    resume_may_change = frozenset({"lr_img", "lr_lr", "lr_label"})
    expected_protocol = "mtt"

    def check(self, real: RealData) -> None:
        """The expert buffer exists, was trained on this data and is long enough."""
        hp: MTTParams = self.hparams  # type: ignore[assignment]
        self.buffer = open_buffer(hp.buffer, real, "MTT needs an expert buffer")
        top = max(hp.max_start_epoch, hp.window_grow_to)
        # start epochs are drawn below ``top``, so the latest target is top - 1 + M
        if top - 1 + hp.expert_epochs > self.buffer.epochs:
            bound = "window_grow_to" if top > hp.max_start_epoch else "max_start_epoch"
            raise ConfigError(
                f"A start epoch up to {top - 1} (below {bound} {top}) plus "
                f"expert_epochs {hp.expert_epochs} exceeds the {self.buffer.epochs} epochs of "
                f"the experts in {hp.buffer}; lower them (--hp max_start_epoch=..., --hp "
                "expert_epochs=..., and window_grow_to if set) or train longer experts."
            )
        if hp.soft_labels and hp.label_epoch > self.buffer.epochs:
            raise ConfigError(
                f"label_epoch {hp.label_epoch} is beyond the {self.buffer.epochs} epochs of the "
                f"experts in {hp.buffer}; use -1 (the last) or a smaller epoch."
            )
        recipe = self.buffer.recipe
        # the experts' SGD steps between a start epoch and its target (each epoch over the
        # training split in batches): the papers' students take far fewer (CIFAR-100 IPC
        # 1: 20 against 3 x 196); more, and a student starting at the experts' lr travels
        # further than they did
        steps = hp.expert_epochs * -(-real.train_x.shape[0] // recipe.batch_size)
        if hp.syn_steps > steps:
            warnings.warn(
                f"The students take syn_steps {hp.syn_steps} SGD steps to match expert_epochs "
                f"{hp.expert_epochs} of the experts in {hp.buffer}, which took {steps} "
                f"(batches of {recipe.batch_size} from {real.train_x.shape[0]} training "
                "images): starting at the experts' lr they overshoot, so the matching loss "
                "starts far above 1 and the pixel updates can wreck the images; pass --hp "
                f"syn_steps={steps} or less, or a larger expert_epochs.",
                stacklevel=user_stacklevel(),
            )
        lr = recipe.lr
        if not math.isclose(lr, hp.lr_teacher, rel_tol=1e-6):
            warnings.warn(
                f"The experts in {hp.buffer} were trained with lr {lr:g}, but the students "
                f"start from lr_teacher {hp.lr_teacher:g} (the paper starts them at the "
                f"experts' lr); pass --hp lr_teacher={lr:g} unless this is intended.",
                stacklevel=user_stacklevel(),
            )
        self._checked_for = data_fingerprint(real)

    def changeable_on_resume(self) -> frozenset[str]:
        if self.hparams.soft_labels:  # type: ignore[attr-defined]
            return self.resume_may_change
        return self.resume_may_change - {"lr_label"}  # no label optimiser to apply it to

    def setup(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> None:
        hp: MTTParams = self.hparams  # type: ignore[assignment]
        if getattr(self, "_checked_for", None) != data_fingerprint(real):
            self.check(real)  # not checked yet (a direct setup() call), or other data
        self.real, self.generator, self.device = real, generator, device
        self.net = self.buffer.network(generator).to(device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.train()
        self.layout = FlatParams.of(self.net)
        if hp.soft_labels:  # DATM's label expert: expert 0 at label_epoch, read once
            epoch = self.buffer.epochs if hp.label_epoch < 0 else hp.label_epoch
            self.label_theta = self.buffer.epoch(0, epoch).to(device)
            self._calibrate_batch_norm(real)
        f, k = hp.factor, real.info.num_classes
        check_ipc(real, ipc, f, hp.init)
        start: Tensor
        if hp.soft_labels and hp.init == "real":
            picks = self._correctly_classified(real, ipc * f * f, f)
            start = encode(picks.reshape(-1, *picks.shape[2:]), f)
        else:
            start = init_synset(real, ipc, hp.init, generator, device, f).stored()[0]
        soft = None
        if hp.soft_labels:  # DATM: the label expert's logits on the initial images; with a
            # factor, the mean of a stored image's tiles' logits (the tiles share its label;
            # where every tile is classified correctly, so is the mean)
            soft = self._label_logits(decode(start, f)).view(len(start), f * f, k).mean(1)
        self.synset = (
            PixelSet(start, k, soft, lr=hp.lr_teacher)
            if f == 1
            else MultiFormationSet(start, k, f, soft, lr=hp.lr_teacher)
        ).to(device)
        s = self.synset
        self.opt_img = torch.optim.SGD([s.images], lr=hp.lr_img, momentum=hp.momentum)
        assert s.lr is not None
        self.opt_lr = torch.optim.SGD([s.lr], lr=hp.lr_lr, momentum=hp.momentum)
        self.opt_label = (
            torch.optim.SGD([s.soft_labels], lr=hp.lr_label, momentum=hp.momentum_label)
            if s.soft_labels is not None
            else None
        )
        cfg = DSAConfig(strategy=hp.dsa_strategy).for_dataset(real.info.allow_flip)
        self.dsa = DSA(cfg) if hp.dsa else None

    def manifest_extra(self) -> dict[str, Any]:
        """The experts' recipe (the learned lr was learned for their network) and which
        experts of the buffer the run drew from."""
        return buffer_manifest(self.buffer)

    def _calibrate_batch_norm(self, real: RealData) -> None:
        """The label expert's batch-norm statistics, estimated from real images (the
        buffer keeps none; a no-op without batch norm)."""
        theta = self.layout.unflatten(self.label_theta)
        calibrate_batch_norm(
            self.net, real, self.generator, lambda x: functional_call(self.net, theta, (x,))
        )

    def _label_logits(self, images: Tensor) -> Tensor:
        """Logits of expert 0 at ``label_epoch`` (DATM's label expert) on ``images``, in
        chunks of 256 (so that a large set's decoded tiles fit; beyond 256 images the
        logits may differ from one pass in the last bits)."""
        theta = self.layout.unflatten(self.label_theta)
        with torch.no_grad():
            self.net.eval()
            logits = [
                functional_call(self.net, theta, (chunk.to(self.device),)).cpu()
                for chunk in images.split(256)
            ]
            self.net.train()
        return torch.cat(logits)

    def _correctly_classified(self, real: RealData, ipc: int, factor: int = 1) -> Tensor:
        """DATM's initialisation with soft labels: per class, ``ipc`` random real images
        that the label expert classifies correctly (so no label starts on a wrong class),
        judged as they will be trained on (with a multi-formation ``factor``, at
        ``1/factor`` resolution, upsampled back). Candidates are drawn in random order; if
        a class has too few correct ones, its most confident remaining candidates fill the
        gap."""
        check_ipc(real, ipc)
        per_class = []
        for c, count in enumerate(real.class_counts()):
            n = min(count, max(8 * ipc, 64))
            cand = real.sample(c, n, self.generator).cpu()
            logits = self._label_logits(at_tile_resolution(cand, factor))
            correct = logits.argmax(1) == c
            right, wrong = correct.nonzero()[:, 0], (~correct).nonzero()[:, 0]
            wrong = wrong[logits[wrong, c].argsort(descending=True)]  # most confident first
            per_class.append(cand[torch.cat([right, wrong])[:ipc]])
        return torch.stack(per_class)

    def _max_start(self) -> int:
        hp: MTTParams = self.hparams  # type: ignore[assignment]
        if hp.window_grow_to <= hp.max_start_epoch:
            return hp.max_start_epoch
        frac = min(1.0, self.iteration / hp.window_grow_iterations)
        return int(round(hp.max_start_epoch + frac * (hp.window_grow_to - hp.max_start_epoch)))

    def step(self) -> dict[str, float]:
        hp: MTTParams = self.hparams  # type: ignore[assignment]
        g = self.generator
        expert = int(torch.randint(len(self.buffer), (1,), generator=g))
        start_epoch = int(torch.randint(hp.min_start_epoch, self._max_start(), (1,), generator=g))
        start = self.buffer.epoch(expert, start_epoch).to(self.device)
        target = self.buffer.epoch(expert, start_epoch + hp.expert_epochs).to(self.device)
        s = self.synset
        assert isinstance(s, (PixelSet, MultiFormationSet)) and s.lr is not None
        f = hp.factor
        n = s.images.shape[0] * f * f  # training (decoded) images
        batch = hp.batch_syn or n
        # Every mini-batch and augmentation of the unroll is drawn up front, so that a
        # recomputed step sees exactly the same inputs.
        plan: list[tuple[Tensor, Any]] = []
        order: list[Tensor] = []
        for _ in range(hp.syn_steps):
            if not order:
                order = list(torch.randperm(n, generator=g).split(batch))
            idx = order.pop(0).to(self.device)
            params = None
            if self.dsa is not None:
                params = one_family_per_batch(self.dsa.sample(idx.shape[0], g, self.device))
            plan.append((idx, params))
        labels = s.labels

        def batch_fn(i: int, images: Tensor, soft: Tensor | None) -> tuple[Tensor, Tensor]:
            idx, params = plan[i]
            x = decode_rows(images, idx, f)
            if params is not None:
                x = self.dsa(x, params)  # type: ignore[misc]
            rows = idx // (f * f)  # the stored image each tile comes from, whose label it has
            y = soft[rows].softmax(1) if soft is not None else labels[rows]
            return x, y

        fn = unroll_constant_memory if hp.unroll == "constant" else unroll_full
        res = fn(
            self.net,
            self.layout,
            start,
            target,
            s.images,
            s.soft_labels,
            s.lr,
            hp.syn_steps,
            batch_fn,
        )
        for opt in (self.opt_img, self.opt_lr, self.opt_label):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        s.images.grad = res.grad_images
        s.lr.grad = res.grad_lr.reshape(s.lr.shape)
        if s.soft_labels is not None:
            s.soft_labels.grad = res.grad_soft
        for opt in (self.opt_img, self.opt_lr, self.opt_label):
            if opt is not None:
                opt.step()
        with torch.no_grad():  # a step size <= 0 would train the student (and the
            # evaluation that uses the learned lr) uphill: project it back above a floor
            s.lr.clamp_(min=LR_FLOOR * hp.lr_teacher)
        self.iteration += 1
        return {"loss": res.loss, "syn_lr": float(s.lr.detach()), "start_epoch": start_epoch}

    def state_dict(self) -> dict[str, Any]:
        out = {
            **super().state_dict(),
            "opt_img": self.opt_img.state_dict(),
            "opt_lr": self.opt_lr.state_dict(),
            "experts": self.buffer.names(),  # a resume draws from the same experts
        }
        if self.opt_label is not None:
            out["opt_label"] = self.opt_label.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "experts" in state:  # checkpoints of earlier versions do not name them
            self.buffer.keep_only(state["experts"])
        super().load_state_dict(state)
        hp: MTTParams = self.hparams  # type: ignore[assignment]
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_lr.load_state_dict(state["opt_lr"])
        set_lr(self.opt_img, hp.lr_img)
        set_lr(self.opt_lr, hp.lr_lr)
        if self.opt_label is not None:
            self.opt_label.load_state_dict(state["opt_label"])
            set_lr(self.opt_label, hp.lr_label)
