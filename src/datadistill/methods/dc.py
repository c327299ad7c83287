"""Gradient matching: Dataset Condensation (DC; Zhao, Mopuri & Bilen, ICLR 2021) and its
Siamese-augmented variant (DSA; Zhao & Bilen, ICML 2021).

One step is one outer iteration of the paper: a freshly initialised network, then
``outer_loop`` times: match, class by class, the gradient of the loss on a real batch with
the gradient on the class's synthetic images, update the synthetic images, and (except after
the last match) train the network for ``inner_loop`` epochs on the synthetic set (or on
real images, below), so the matches follow the network along a training trajectory:

    loss = sum_c D(grad_theta CE(theta; A_c(x_real_c)), grad_theta CE(theta; A_c(s_c)))

D sums, per layer and per output channel, ``1 - cos`` (``distance="ours"``; ``mse`` and
``cos`` are the paper's alternatives, ``l1`` IDC's absolute difference of the
convolution kernels' gradients). The K per-class gradients of each side come from one
pass, not K backward passes. The real side (the large one) for ConvNets: one forward /
backward over all classes with per-class weight copies
(:mod:`datadistill.functional.class_grads`; compiled, on CPU in cache-sized chunks of
``real_chunk`` images per class); for other networks, and for the small synthetic side
whose gradient must reach the pixels, ``vmap`` over classes
(:func:`datadistill.functional.grads.per_class_grads`). With many classes (CIFAR-100,
ImageNet subsets) a pass takes the classes in groups that fit a budget of activation
memory (:func:`datadistill.methods.common.class_groups`), one group's real images
gathered at a time and one group's synthetic graph alive at a time; the gradients are
those of one pass, as the distance is a sum over classes. Batch norm,
as in the paper: its statistics are set by a forward pass of a few real images per class
(above the same budget, measured a layer at a time over chunks of them with the result
of one pass: :func:`datadistill.methods.common.batch_norm_statistics`), then frozen while
matching.

``net_data="real"`` trains the network between matches on fresh real images instead
(IDC, Kim et al., ICML 2022: ``inner_loop`` passes, one unless set, each over a fresh
draw of ``net_real`` real images, evenly over the classes), which keeps the network's
trajectory that of real training and, with a multi-formation set, costs far less than
epochs over its ``ipc * factor**2`` images per class.

``net_init="experts"`` starts each outer iteration from an early-stage network instead of
a fresh initialisation (Acc-DD, Zhang et al., CVPR 2023, "model augmentation"): one expert,
drawn at random from an expert buffer (``datadistill experts``), after ``expert_epoch``
epochs of real training, moved along two random directions, each Gaussian rescaled per
output filter to that filter's norm (biases and norm parameters stay), by amounts drawn
uniformly from [``perturb_min``, ``perturb_max``] with a random sign (the paper's 0.01 and
0.09). The networks then see the real data's gradients from the first match on, which the
paper finds converges in a fraction of the iterations.

``sampling="representative"`` matches on a representative real batch instead of a random
one (DREAM, Liu et al., ICCV 2023): at the first match of each outer iteration and every
``rep_interval``-th after it (DREAM's 10), each class's training images (DREAM's choice;
or a random pool of ``rep_pool`` of them, cheaper) are clustered into ``batch_real``
groups (at most the largest class's size; a class no larger gives all its images) by
k-means in the network's current embedding, and the image nearest to each centre joins
the batch, which the matches then reuse until the next clustering. The batch
covers each class evenly; the paper reaches random sampling's accuracy in an eighth of the
iterations. The k-means runs on the CPU (scikit-learn): for a whole class of thousands of
images into hundreds of centres, seconds per class, which ``rep_pool`` bounds.

``precision="bfloat16"`` (or ``"auto"``: bf16 where the device computes it natively)
autocasts the two parts that need no second-order gradient, the real side's per-class
gradients and the network's training between matches; the synthetic side, whose gradient
reaches the pixels through the matching loss, and all parameters stay float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from datadistill._device import COMPILE_CHOICES, compiler_works
from datadistill.augment import DSA, DSAConfig, DSAParams, one_family_per_batch
from datadistill.data import RealData
from datadistill.errors import ConfigError
from datadistill.evaluation.train import label_loss
from datadistill.experts import buffer_manifest, data_fingerprint, open_buffer
from datadistill.functional import GRADIENT_DISTANCES, gradient_distance, l1_matches
from datadistill.functional.class_grads import class_grads, class_loss, stem_logits, supports
from datadistill.functional.grads import detached_params, per_class_grads
from datadistill.functional.unroll import FlatParams
from datadistill.methods.base import (
    HParams,
    Method,
    one_of,
    positive,
    register_method,
    registered_model,
    require,
    set_lr,
)
from datadistill.methods.common import (
    INITS,
    PRECISIONS,
    autocast_to,
    backward_in_class_groups,
    batch_norm_statistics,
    class_groups,
    even_chunk,
    init_synset,
    maybe_compile,
    pass_elements,
    representative_indices,
    resolve_precision,
)
from datadistill.models import create_model_for, reset_parameters
from datadistill.models.convnet import ConvNet

# (outer_loop, inner_loop) by IPC, from the DC paper / reference code.
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BN_IMAGES_PER_CLASS = 16  # real images per class that set batch-norm statistics
NET_DATA = ("synthetic", "real")  # what the network trains on between matches
NET_INITS = ("random", "experts")  # where each outer iteration's network starts
SAMPLINGS = ("random", "representative")  # how each match's real batch is drawn


def default_loops(ipc: int) -> tuple[int, int]:
    """The paper's (outer_loop, inner_loop) for ``ipc``; between two tabulated IPCs the
    next larger one, above 50 the schedule of 50."""
    for key in sorted(LOOPS):
        if ipc <= key:
            return LOOPS[key]
    return LOOPS[50]


@dataclasses.dataclass(frozen=True)
class DCParams(HParams):
    lr_img: float = 0.1  # SGD learning rate of the synthetic pixels (momentum 0.5)
    momentum: float = 0.5  # SGD momentum of the synthetic pixels
    lr_net: float = 0.01  # SGD learning rate of the network trained between matches
    batch_real: int = 256  # real images per class per match
    sampling: str = "random"  # the real batch: "random" (the paper's) or "representative"
    # (DREAM: the images nearest to batch_real k-means centres of the class, re-clustered
    # in the current network's embedding every rep_interval matches)
    rep_interval: int = 10  # matches between two clusterings within an outer iteration
    # (each iteration's network clusters at its first match; DREAM's 10)
    rep_pool: int = 0  # images per class clustered: 0, all of them (DREAM's), else a
    # random draw of this many at each clustering (cheaper; more than batch_real)
    batch_train: int = 256  # batch size of the network's training between matches
    outer_loop: int = 0  # matches per iteration; 0: the paper's schedule by IPC
    inner_loop: int = 0  # network epochs between matches; 0: by IPC (net_data "real": 1)
    net_data: str = "synthetic"  # what the network trains on between matches: "synthetic"
    # (DC) or "real" (IDC: net_real fresh real images, drawn evenly over the classes)
    net_real: int = 500  # real images per pass with net_data "real" (IDC's 500), rounded
    # up to a multiple of the class count
    distance: str = "ours"  # "ours" (per-channel 1 - cos), "mse", "cos" or "l1" (IDC's:
    # summed absolute difference of the convolution kernels' gradients only)
    arch: str = "convnet"  # the matching network, re-initialised every iteration
    net_init: str = "random"  # each iteration's network: "random" (a fresh initialisation,
    # the paper's) or "experts" (Acc-DD: an early-stage expert from `buffer`, perturbed)
    buffer: str = ""  # expert buffer folder (`datadistill experts`) for net_init "experts"
    expert_epoch: int = 2  # the experts' epoch the networks start from (Acc-DD: 2 on CIFAR)
    perturb_min: float = 0.01  # the size of each of the two filter-normalised random
    perturb_max: float = 0.09  # directions is drawn uniformly from [min, max] (0, 0: none)
    width: int = 128  # network width (ConvNets, MLP: see takes_width; refused for others)
    dsa: bool = False  # Siamese augmentation (True for the "dsa" method)
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # flip is dropped for digits
    init: str = "real"  # "real" (random real images), "kmeans" (real images nearest to
    # per-class k-means centroids, a DREAM-style clustering start), "kmeans-features" (the
    # same in a briefly trained ConvNet's embedding), "herding" (herding's picks in that
    # embedding) or "noise"
    factor: int = 1  # multi-formation (IDC): each stored image tiles factor**2 training
    # images at 1/factor resolution; 1: plain pixels. The loops by IPC follow the stored IPC
    # (each inner epoch then trains on factor**2 times as many images)
    real_chunk: int = 0  # real images per class per pass (same gradient); 0: 16 on CPU
    # (cache-sized work), on GPU the whole batch as far as the pass budget allows; with
    # many classes a pass also takes them in groups (methods.common.class_groups)
    compile: str = "auto"  # torch.compile the real side and the inner training: auto/yes/no
    # compute dtype of the real-side gradients and the inner training: "float32" (the
    # paper's), "bfloat16", or "auto" (bf16 where the device has native bf16)
    precision: str = "float32"

    applies_only_with: ClassVar[dict[str, tuple[str, Any]]] = {
        "net_real": ("net_data", "real"),
        "dsa_strategy": ("dsa", True),
        "rep_interval": ("sampling", "representative"),
        "rep_pool": ("sampling", "representative"),
        "buffer": ("net_init", "experts"),
        "expert_epoch": ("net_init", "experts"),
        "perturb_min": ("net_init", "experts"),
        "perturb_max": ("net_init", "experts"),
    }

    def validate(self) -> None:
        for name in ("lr_img", "lr_net"):
            positive("DC", name, getattr(self, name))
        m = self.momentum
        require(
            "DC", "momentum", m, isinstance(m, (int, float)) and 0 <= m < 1, "a number in [0, 1)"
        )
        for name in ("batch_real", "batch_train", "width", "net_real"):
            positive("DC", name, getattr(self, name), int)
        c = self.real_chunk
        require("DC", "real_chunk", c, isinstance(c, int) and c >= 0, "an int >= 0 (0: auto)")
        for name in ("outer_loop", "inner_loop"):
            v = getattr(self, name)
            require("DC", name, v, isinstance(v, int) and v >= 0, "an int >= 0 (0: by IPC)")
        one_of("DC", "distance", self.distance, GRADIENT_DISTANCES)
        one_of("DC", "net_data", self.net_data, NET_DATA)
        one_of("DC", "sampling", self.sampling, SAMPLINGS)
        positive("DC", "rep_interval", self.rep_interval, int)
        p = self.rep_pool
        integer = isinstance(p, int) and not isinstance(p, bool)
        require("DC", "rep_pool", p, integer and p >= 0, "an int >= 0 (0: the whole class)")
        if self.sampling == "representative" and 0 < p <= self.batch_real:
            raise ConfigError(
                f"rep_pool {p} leaves nothing to cluster: each clustering picks batch_real "
                f"({self.batch_real}) images per class from the pool, so give more than "
                f"{self.batch_real}, or 0 for the whole class."
            )
        one_of("DC", "net_init", self.net_init, NET_INITS)
        require("DC", "buffer", self.buffer, isinstance(self.buffer, str), "a folder path")
        e = self.expert_epoch
        integer = isinstance(e, int) and not isinstance(e, bool)
        require("DC", "expert_epoch", e, integer and e >= 0, "an int >= 0")
        lo, hi = self.perturb_min, self.perturb_max
        for name, v in (("perturb_min", lo), ("perturb_max", hi)):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            require("DC", name, v, number and math.isfinite(v) and v >= 0, "a number >= 0")
        require("DC", "perturb_max", hi, hi >= lo, f"at least perturb_min ({lo})")
        registered_model(self, "DC")
        one_of("DC", "init", self.init, INITS)
        positive("DC", "factor", self.factor, int)
        one_of("DC", "compile", self.compile, COMPILE_CHOICES)
        one_of("DC", "precision", self.precision, PRECISIONS)


@register_method("dc")
class DC(Method):
    """Dataset Condensation: per-class gradient matching (Zhao et al. 2021)."""

    hparams_class = DCParams
    default_iterations = 1000
    resume_may_change = frozenset({"lr_img", "lr_net"})  # lr_net: read at each outer step

    def check(self, real: RealData) -> None:
        """``distance="l1"`` matches convolution kernels only: refuse a network without.
        ``net_init="experts"``: the buffer exists, holds this data's experts of the matching
        network, and reaches ``expert_epoch``."""
        hp: DCParams = self.hparams  # type: ignore[assignment]
        if hp.net_init == "experts":
            self._check_buffer(real)
        if hp.distance != "l1":
            return
        net = create_model_for(hp.arch, real.info, hp.width, torch.Generator().manual_seed(0))
        if not any(l1_matches(p) for p in net.parameters()):
            raise ConfigError(
                f"distance 'l1' matches the gradients of convolution kernels only (as IDC "
                f"does), and {hp.arch!r} has none: choose a convolutional arch or another "
                f"distance (ours, mse, cos)."
            )

    def _check_buffer(self, real: RealData) -> None:
        hp: DCParams = self.hparams  # type: ignore[assignment]
        needs = "net_init 'experts' starts the networks from an expert buffer (a few epochs)"
        self.buffer = open_buffer(hp.buffer, real, needs, hp.arch, hp.width)
        if hp.expert_epoch > self.buffer.epochs:
            raise ConfigError(
                f"expert_epoch {hp.expert_epoch} is beyond the {self.buffer.epochs} epochs of "
                f"the experts in {hp.buffer}; lower it or train longer experts."
            )
        self._checked_for = data_fingerprint(real)

    def setup(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> None:
        hp: DCParams = self.hparams  # type: ignore[assignment]
        if hp.net_init == "experts" and getattr(self, "_checked_for", None) != data_fingerprint(
            real
        ):
            self._check_buffer(real)  # not checked yet (a direct setup() call), or other data
        self.real, self.generator, self.device = real, generator, device
        self.synset = init_synset(real, ipc, hp.init, generator, device, hp.factor).to(device)
        self.optimizer = torch.optim.SGD(
            self.synset.parameters(), lr=hp.lr_img, momentum=hp.momentum
        )
        outer, inner = default_loops(ipc)
        self.outer_loop = hp.outer_loop or outer
        self.inner_loop = hp.inner_loop or (inner if hp.net_data == "synthetic" else 1)
        self.net = create_model_for(hp.arch, real.info, hp.width, generator).to(device)
        self.bn = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        cfg = DSAConfig(strategy=hp.dsa_strategy).for_dataset(real.info.allow_flip)
        self.dsa = DSA(cfg) if hp.dsa else None
        # "auto" compiles on CPU too (one DC iteration trains the network hundreds of
        # times), where the compiler works on this device
        mode = "yes" if hp.compile == "auto" and compiler_works(device) else hp.compile
        self.real_loss = maybe_compile(class_loss, mode, device, 0)
        # a ConvNet trains with the im2col weight gradient in its stem where that applies
        # (on CPU, several times faster than oneDNN's for 1- or 3-channel inputs; elsewhere
        # stem_logits is the network's own forward)
        net = self.net
        fwd: Any = functools.partial(stem_logits, net) if isinstance(net, ConvNet) else net
        self.train_forward = maybe_compile(fwd, mode, device, 0)
        self.dtype = resolve_precision(hp.precision, device)
        # oneDNN's bf16 convolutions (their weight gradients above all) run faster on
        # channels-last tensors; float32 ones did not on our CPUs (figures in NOTES.md)
        self.layout = torch.channels_last if self.dtype == torch.bfloat16 else None
        if self.layout is not None:
            self.net.to(memory_format=self.layout)  # type: ignore[call-overload]
        self.rep_idx: torch.Tensor | None = None  # representative batch (train positions)
        self.budget = pass_elements(device)  # activation elements per pass (class groups)
        embed: Any = self.net.embed  # DREAM's clustering space, compiled as the training
        self.embed = maybe_compile(embed, mode, device, 0)  # (compiled at its first call)

    # ------------------------------------------------------------------ one outer iteration
    def step(self) -> dict[str, float]:
        hp: DCParams = self.hparams  # type: ignore[assignment]
        if hp.net_init == "experts":
            self._early_stage_net()
        else:
            reset_parameters(self.net, self.generator)  # a fresh network every iteration
        net_opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr_net)
        total = 0.0
        for ol in range(self.outer_loop):
            total += self._match(ol)
            if ol == self.outer_loop - 1:
                break
            self._train_net(net_opt)
        self.iteration += 1
        k = self.real.info.num_classes
        return {"loss": total / (self.outer_loop * k)}

    def _early_stage_net(self) -> None:
        """Acc-DD's model augmentation: a random expert after ``expert_epoch`` epochs,
        perturbed (:func:`perturb_filters`), copied into the network in place (its memory
        format, and so a compiled forward, stay as they are)."""
        hp: DCParams = self.hparams  # type: ignore[assignment]
        g = self.generator
        expert = int(torch.randint(len(self.buffer), (1,), generator=g))
        theta = FlatParams.of(self.net).unflatten(self.buffer.epoch(expert, hp.expert_epoch))
        moved = perturb_filters(list(theta.values()), hp.perturb_min, hp.perturb_max, g)
        with torch.no_grad():
            for p, v in zip(self.net.parameters(), moved, strict=True):
                p.copy_(v)
            for m in self.net.modules():  # the buffer keeps no statistics (as a fresh
                if isinstance(m, _NormBase) and m.track_running_stats:  # network: reset)
                    m.reset_running_stats()

    def manifest_extra(self) -> dict[str, Any]:
        """With ``net_init="experts"``: the experts' recipe and the experts it drew from."""
        if self.hparams.net_init != "experts":  # type: ignore[attr-defined]
            return {}
        return buffer_manifest(self.buffer)

    def _match(self, ol: int) -> float:
        hp: DCParams = self.hparams  # type: ignore[assignment]
        k = self.real.info.num_classes
        if self.bn:  # batch statistics from a few real images per class, then frozen
            x_bn = self.real.sample_per_class(BN_IMAGES_PER_CLASS, self.generator)
            chunk = max(1, self.budget // self._image_elements())  # those of one pass
            batch_norm_statistics(self.net, x_bn.flatten(0, 1).to(self.device), chunk)
            for m in self.bn:
                m.eval()
        idx = self._real_indices(ol)  # (K, m) training positions
        syn = self.synthetic().class_images()  # (K, ipc * factor**2, C, H, W)
        params = None
        if self.dsa is not None:  # one parameter draw per class, shared by both sides
            params = self.dsa.sample(k, self.generator, self.device)
            syn = self.dsa(syn, params)
        labels = torch.arange(k, device=self.device)
        theta = detached_params(self.net)
        g_real = self._real_side(theta, idx, params)
        self.optimizer.zero_grad(set_to_none=True)
        y_syn = labels[:, None].expand(k, syn.shape[1])
        groups = class_groups(k, syn.shape[1] * self._image_elements(), self.budget)

        def loss_of(grp: slice, s: torch.Tensor) -> torch.Tensor:
            g_syn = per_class_grads(self.net, theta, s, y_syn[grp])
            return gradient_distance([g[grp] for g in g_real], g_syn, hp.distance)

        loss = backward_in_class_groups(syn, groups, loss_of)
        self.optimizer.step()
        self.net.train()
        return float(loss)

    def _image_elements(self) -> int:
        """A real or synthetic image's share of a pass's budget (:func:`class_groups`):
        the network width times the image's pixels."""
        h, w = self.real.info.image_size
        return self.hparams.width * h * w  # type: ignore[attr-defined]

    def _real_indices(self, ol: int) -> torch.Tensor:
        """The training positions of the ``ol``-th match's real images, (K, m) with
        m = min(batch_real, largest class): a fresh random draw, or DREAM's
        representative batch, clustered in the network's current embedding (float32,
        batch norm frozen as for the match) at match 0 and every ``rep_interval``-th."""
        hp: DCParams = self.hparams  # type: ignore[assignment]
        if hp.sampling == "random":
            return self.real.sample_indices_per_class(hp.batch_real, self.generator)
        if ol % hp.rep_interval == 0 or self.rep_idx is None:  # (ol 0 always clusters)
            self.rep_idx = representative_indices(
                self.real, self.embed, hp.batch_real, hp.rep_pool, self.generator, self.device
            )
        return self.rep_idx

    def _real_side(
        self, theta: dict[str, torch.Tensor], idx: torch.Tensor, params: DSAParams | None
    ) -> list[torch.Tensor]:
        """Per-class gradients on the real images at ``idx`` (K, m), augmented with
        ``params``: the classes in groups that fit the pass budget (one group unless there
        are many classes), each group's images gathered only when its turn comes."""
        k, m = idx.shape
        labels = torch.arange(k, device=self.device)
        per_pass = min(m, self._real_chunk(m)) if supports(self.net) else m
        per_class = per_pass * self._image_elements()
        parts = []
        for grp in class_groups(k, per_class, self.budget):
            real = self.real.train_images(idx[grp]).to(self.device)
            if self.dsa is not None and params is not None:
                real = self.dsa(real, params.take(grp))
            parts.append(self._real_grads(theta, real, labels[grp, None].expand(-1, m)))
        if len(parts) == 1:
            return parts[0]
        return [torch.cat(per_param) for per_param in zip(*parts, strict=True)]

    def _real_chunk(self, b: int) -> int:
        """Real images per class per pass: ``real_chunk``, or 16 on CPU (cache-sized
        work), and elsewhere the whole batch, or equal parts of it that fit the pass
        budget."""
        hp: DCParams = self.hparams  # type: ignore[assignment]
        if hp.real_chunk:
            return hp.real_chunk
        if self.device.type == "cpu":
            return 16
        return even_chunk(b, self.budget // self._image_elements())

    def _real_grads(self, theta: dict[str, torch.Tensor], real: torch.Tensor, y: torch.Tensor):
        """Per-class gradients on the real batch (no graph): one pass per chunk of
        :meth:`_real_chunk` images per class, weighted so the sum is each class's batch
        mean."""
        if not supports(self.net):
            with torch.no_grad(), autocast_to(self.dtype, self.device):
                return per_class_grads(self.net, theta, real, y)
        b = real.shape[1]
        chunk = self._real_chunk(b)
        total: list[torch.Tensor] | None = None
        for start in range(0, b, chunk):
            stop = min(start + chunk, b)
            with autocast_to(self.dtype, self.device):
                g = class_grads(
                    self.net, theta, real[:, start:stop], y[:, start:stop], loss_fn=self.real_loss
                )
            assert g is not None
            w = (stop - start) / b
            if total is None:
                total = [gi * w for gi in g]
            else:
                total = [t + gi * w for t, gi in zip(total, g, strict=True)]
        assert total is not None
        return total

    def _net_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What the network trains on between matches: (a detached copy of) the synthetic
        set, or fresh real images drawn evenly over the classes (IDC): ``net_real`` rounded
        up to a multiple of the class count."""
        hp: DCParams = self.hparams  # type: ignore[assignment]
        if hp.net_data == "synthetic":
            images, labels, soft = self.synthetic().materialize()
            return images.detach(), labels, soft
        k = self.real.info.num_classes
        x = self.real.sample_per_class(-(-hp.net_real // k), self.generator)  # (K, m, ...)
        labels = torch.arange(k, device=self.device).repeat_interleave(x.shape[1])
        return x.flatten(0, 1).to(self.device), labels, None

    def _train_net(self, net_opt: torch.optim.Optimizer) -> None:
        """``inner_loop`` passes of plain SGD over :meth:`_net_data`: the synthetic set's
        epochs, or for ``net_data="real"`` a fresh real draw each pass (IDC's epochs)."""
        hp: DCParams = self.hparams  # type: ignore[assignment]
        data = None
        self.net.train()
        for _ in range(self.inner_loop):
            if data is None or hp.net_data == "real":
                data = self._net_data()
            images, labels, soft = data
            n = images.shape[0]
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for start in range(0, n, hp.batch_train):
                idx = order[start : start + hp.batch_train]
                x = images[idx]
                if self.dsa is not None:  # per-image parameters, as when training networks
                    params = self.dsa.sample(x.shape[0], self.generator, self.device)
                    x = self.dsa(x, one_family_per_batch(params))
                if self.layout is not None:
                    x = x.contiguous(memory_format=self.layout)
                sft = soft[idx].detach() if soft is not None else None
                with autocast_to(self.dtype, self.device):
                    logits = self.train_forward(x)
                loss = label_loss(logits.float(), labels[idx], sft)
                net_opt.zero_grad(set_to_none=True)
                loss.backward()
                net_opt.step()

    def state_dict(self) -> dict[str, Any]:
        out = {**super().state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.hparams.net_init == "experts":  # type: ignore[attr-defined]
            out["experts"] = self.buffer.names()  # a resume draws from the same experts
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "experts" in state:
            self.buffer.keep_only(state["experts"])
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        set_lr(self.optimizer, self.hparams.lr_img)  # type: ignore[attr-defined]


def perturb_filters(
    theta: list[torch.Tensor], lo: float, hi: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """``theta`` moved along two random directions (Acc-DD's parameter perturbation, after
    Li et al.'s filter-normalised directions): each direction is Gaussian, rescaled so that
    each output filter (row of a weight) has the norm of that filter of ``theta``; it is
    zero for one-dimensional parameters (biases, norm affines). Each direction's size is
    drawn from U[lo, hi] with a random sign. Draws come from ``generator`` (on the CPU)."""
    sizes = [
        float(torch.empty(()).uniform_(lo, hi, generator=generator))
        * (1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0)
        for _ in range(2)
    ]
    out = []
    for w in theta:
        if w.dim() <= 1 or hi == 0:
            out.append(w.clone())
            continue
        move = torch.zeros_like(w)
        w_norm = w.flatten(1).norm(dim=1)
        for size in sizes:
            d = torch.randn(w.shape, generator=generator).to(w.device, w.dtype)
            d_norm = d.flatten(1).norm(dim=1)
            scale = (w_norm / (d_norm + 1e-10)).view(-1, *([1] * (w.dim() - 1)))
            move += size * d * scale
        out.append(w + move)
    return out


@dataclasses.dataclass(frozen=True)
class DSAParamsHP(DCParams):
    dsa: bool = True

    display_name: ClassVar[str] = "DSA"


@register_method("dsa")
class DSAMethod(DC):
    """Gradient matching with differentiable Siamese augmentation (Zhao & Bilen 2021)."""

    hparams_class = DSAParamsHP
    expected_protocol = "dsa"
