"""Distribution Matching (DM; Zhao & Bilen, WACV 2023).

Each iteration draws a freshly initialised, untrained network and matches, per class, the
mean embedding (the layer before the classifier) of a batch of real images and of the
synthetic images, with the same Siamese augmentation applied to both:

    loss = sum_c || mean_i f(A_c(x_real_ci)) - mean_j f(A_c(s_cj)) ||^2

With ``distance="mmd"`` the squared mean distance becomes a Gaussian-kernel MMD between
the class's real and synthetic embeddings (M3D, Zhang et al. 2024;
:func:`datadistill.functional.mmd_loss`). The synthetic pixels are updated with SGD (lr
1.0, momentum 0.5 in the paper). All classes share each forward call (instance norm keeps
samples independent; on CPU the real half runs in cache-sized chunks of ``real_chunk``
images, unless the network has batch norm, which needs the whole batch), the real half
without autograd (optionally in bfloat16, ``real_precision``: on CPUs with native bf16 it
runs about twice as fast, and its mean embeddings differ from float32's by about 0.2%).
With many classes the synthetic half runs in class groups that fit a budget of activation
memory, one group's graph at a time
(:func:`datadistill.methods.common.backward_in_class_groups`; the loss is a sum over
classes, so the gradient is the same), unless batch norm couples the classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from datadistill._device import COMPILE_CHOICES
from datadistill.augment import DSA, DSAConfig
from datadistill.data import RealData
from datadistill.functional import EMBEDDING_DISTANCES
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
    class_groups,
    even_chunk,
    init_synset,
    maybe_compile,
    pass_elements,
    require_embed,
    resolve_precision,
)
from datadistill.models import create_model_for, reset_parameters


@dataclasses.dataclass(frozen=True)
class DMParams(HParams):
    lr_img: float = 1.0  # SGD learning rate of the synthetic pixels
    momentum: float = 0.5  # SGD momentum of the synthetic pixels
    batch_real: int = 256  # real images per class per iteration
    arch: str = "convnet"  # embedding network, re-initialised every iteration
    width: int = 128  # network width (ConvNets, MLP: see takes_width; refused for others)
    dsa: bool = True  # Siamese augmentation on both sides
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # flip is dropped for digits
    init: str = "real"  # "real" (random real images), "kmeans" (real images nearest to
    # per-class k-means centroids, a DREAM-style clustering start), "kmeans-features" (the
    # same in a briefly trained ConvNet's embedding), "herding" (herding's picks in that
    # embedding) or "noise"
    factor: int = 1  # multi-formation (IDC): each stored image tiles factor**2 training
    # images at 1/factor resolution; 1: plain pixels
    compile: str = "auto"  # torch.compile the embedding: "auto", "yes" or "no"
    real_chunk: int = 0  # real images per forward call; 0: 16 on CPU (cache-sized), on GPU
    # as many as fit the pass budget (all of MNIST's 2560 at width 128), all with batch
    # norm (whose statistics need the whole batch)
    # compute dtype of the real half's forward (no gradient flows through it); the
    # synthetic half, its gradient and the loss stay float32. "auto": bfloat16 where the
    # device computes it natively (CPUs with AVX512-BF16 / AMX, recent GPUs), else float32
    real_precision: str = "float32"
    distance: str = "mean"  # "mean": the paper's mean embeddings; "mmd": Gaussian-kernel
    # MMD between the real and synthetic embeddings of each class (M3D, Zhang et al. 2024)

    applies_only_with: ClassVar[dict[str, tuple[str, Any]]] = {"dsa_strategy": ("dsa", True)}

    def validate(self) -> None:
        positive("DM", "lr_img", self.lr_img)
        m = self.momentum
        require(
            "DM", "momentum", m, isinstance(m, (int, float)) and 0 <= m < 1, "a number in [0, 1)"
        )
        positive("DM", "batch_real", self.batch_real, int)
        positive("DM", "width", self.width, int)
        registered_model(self, "DM")
        one_of("DM", "init", self.init, INITS)
        positive("DM", "factor", self.factor, int)
        one_of("DM", "compile", self.compile, COMPILE_CHOICES)
        one_of("DM", "real_precision", self.real_precision, PRECISIONS)
        one_of("DM", "distance", self.distance, tuple(EMBEDDING_DISTANCES))
        require(
            "DM",
            "real_chunk",
            self.real_chunk,
            isinstance(self.real_chunk, int) and self.real_chunk >= 0,
            "an int >= 0",
        )


@register_method("dm")
class DM(Method):
    """Distribution Matching: match mean embeddings of random networks (Zhao & Bilen 2023)."""

    hparams_class = DMParams
    default_iterations = 20000
    resume_may_change = frozenset({"lr_img"})

    def setup(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> None:
        hp: DMParams = self.hparams  # type: ignore[assignment]
        self.real, self.generator, self.device = real, generator, device
        self.synset = init_synset(real, ipc, hp.init, generator, device, hp.factor).to(device)
        self.optimizer = torch.optim.SGD(
            self.synset.parameters(), lr=hp.lr_img, momentum=hp.momentum
        )
        self.net = create_model_for(hp.arch, real.info, hp.width, generator).to(device)
        require_embed(self.net, hp.arch, "DM")
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.train()
        n_pixels = real.info.num_classes * hp.batch_real * real.info.channels
        n_pixels *= real.info.image_size[0] * real.info.image_size[1]
        embed = cast(Callable[[Tensor], Tensor], self.net.embed)
        self.embed = maybe_compile(embed, hp.compile, device, n_pixels)
        # On CPU the first layers' activations of a whole real batch (2560 x 128 x 32 x 32
        # floats for MNIST) do not fit in cache; small chunks run about twice as fast.
        # Batch norm would see per-chunk statistics, so such networks take the batch whole.
        batch_norm = any(
            isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in self.net.modules()
        )
        self.batch_norm = batch_norm
        self.budget = pass_elements(device)  # activation elements per pass (class groups)
        h, w = real.info.image_size
        self.image_elements = hp.width * h * w  # an image's share of that budget
        self.real_cap = 0  # > 0: each class group's images in equal calls of at most this
        if batch_norm:  # also over an explicit real_chunk: chunks would change the maths
            self.real_chunk = 1 << 30
        elif hp.real_chunk or device.type == "cpu":
            self.real_chunk = hp.real_chunk or 16
        else:  # a GPU: as few equal calls as the pass budget allows (CIFAR-100's 25600
            # real images at width 128 would hold 13 GB per feature map at once)
            self.real_cap = max(1, self.budget // self.image_elements)
            self.real_chunk = self.real_cap
        cfg = DSAConfig(strategy=hp.dsa_strategy).for_dataset(real.info.allow_flip)
        self.dsa = DSA(cfg) if hp.dsa else None
        self.real_dtype = resolve_precision(hp.real_precision, device)
        self.distance_fn = EMBEDDING_DISTANCES[hp.distance]

    def step(self) -> dict[str, float]:
        hp: DMParams = self.hparams  # type: ignore[assignment]
        reset_parameters(self.net, self.generator)  # a fresh random network
        idx = self.real.sample_indices_per_class(hp.batch_real, self.generator)  # (K, m)
        syn = self.synthetic().class_images()  # (K, ipc * factor**2, C, H, W)
        k, m = idx.shape
        params = None
        if self.dsa is not None:  # one parameter draw per class, shared by both halves
            params = self.dsa.sample(k, self.generator, self.device)
            syn = self.dsa(syn, params)
        c, h, w = syn.shape[2:]
        # the real images in groups of classes whose pixels (not activations: the chunks
        # below bound those) fit the budget, one group unless there are many classes,
        # each gathered and augmented when its turn comes; batch norm takes the batch
        # whole, its statistics spanning the classes
        groups = [slice(0, k)] if self.batch_norm else class_groups(k, m * c * h * w, self.budget)
        feats = []
        with torch.no_grad(), autocast_to(self.real_dtype, self.device):
            for grp in groups:
                real = self.real.train_images(idx[grp]).to(self.device)
                if self.dsa is not None and params is not None:
                    real = self.dsa(real, params.take(grp))
                flat = real.flatten(0, 1)
                chunk = even_chunk(len(flat), self.real_cap) if self.real_cap else self.real_chunk
                feats.append(
                    torch.cat([self.embed(x) for x in flat.split(chunk)]).view(len(real), m, -1)
                )
        real_feat = torch.cat(feats).float() if len(feats) > 1 else feats[0].float()

        def loss_of(grp: slice, s: Tensor) -> Tensor:
            syn_feat = self.embed(s.flatten(0, 1)).view(s.shape[0], s.shape[1], -1)
            return self.distance_fn(real_feat[grp], syn_feat)

        if self.batch_norm:  # its statistics span every class's synthetic images
            groups = [slice(0, k)]
        else:
            groups = class_groups(k, syn.shape[1] * self.image_elements, self.budget)
        self.optimizer.zero_grad(set_to_none=True)
        loss = backward_in_class_groups(syn, groups, loss_of)
        self.optimizer.step()
        self.iteration += 1
        return {"loss": float(loss) / k}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        set_lr(self.optimizer, self.hparams.lr_img)  # type: ignore[attr-defined]
