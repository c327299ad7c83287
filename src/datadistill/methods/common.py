"""Pieces shared by several methods: synthetic-set initialisation, networks, compilation."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from datadistill._device import compiler_works, native_bf16
from datadistill.data import RealData
from datadistill.errors import ConfigError, RunError
from datadistill.synthetic import MultiFormationSet, PixelSet, SyntheticSet, check_factor

PRECISIONS = ("float32", "bfloat16", "auto")
INITS = ("real", "kmeans", "kmeans-features", "herding", "noise")
# The starts that pick real images in a feature space: a width-32 ConvNet after 300 SGD
# steps (batch 256) on the training split, the herding / k-center baselines' recipe at
# width 32.
FEATURE_INITS = ("kmeans-features", "herding")
FEATURE_INIT_WIDTH = 32
FEATURE_INIT_STEPS = 300

# Above this many input pixels per call, compiling the embedding pays for its start-up.
COMPILE_MIN_PIXELS = 1_000_000

# The most activation elements (images x network width x input pixels: one saved map of
# the first block) one batched pass over the classes may hold. A pass above it runs in
# groups of classes instead of holding every class's batch at once (DC on CIFAR-100 at
# width 128 held 4.2 GB for its real side on CPU). The CPU figure keeps DC's real side
# (ten classes of 16 images) in one pass up to width 128 at 32 px, and the synthetic side
# of ten classes at IPC 10 up to width 128 at 32 px, IPC 50 or a multi-formation set
# going to two groups or more; the other, about 1 GiB per float32 map, keeps ten classes
# of 256 MNIST images at width 128 in one pass (32-px images at that width: two).
PASS_ELEMENTS_CPU = 1 << 25
PASS_ELEMENTS = 1 << 28


def require_embed(net: nn.Module, arch: str, owner: str) -> None:
    """A network whose features a method matches must have ``embed(x)`` (the features
    before the classifier, as every :class:`~datadistill.models.ImageClassifier` has):
    refuse one without it at set-up, rather than fail at the first step."""
    if not callable(getattr(net, "embed", None)):
        raise ConfigError(
            f"{owner} matches the features of its network, and the model {arch!r} "
            f"({type(net).__name__}) has no embed(); build it on "
            "datadistill.models.ImageClassifier, or choose another --hp arch."
        )


def pass_elements(device: torch.device) -> int:
    """The activation-element budget of one batched pass on ``device``."""
    return PASS_ELEMENTS_CPU if device.type == "cpu" else PASS_ELEMENTS


def backward_in_class_groups(
    syn: Tensor, groups: list[slice], loss_of: Callable[[slice, Tensor], Tensor]
) -> Tensor:
    """Back-propagate ``sum over groups g of loss_of(g, syn[g])`` into ``syn``'s graph
    (the synthetic set's parameters), for a loss that is a sum over classes; returns the
    loss, detached. With several :func:`class_groups`, one group's graph is alive at a
    time: each group's gradient with respect to ``syn`` is its own, so they are gathered
    on a detached copy and sent back through ``syn``'s graph (augmentation, the set's
    parameterisation) once. ``loss_of(g, s)`` must depend on the classes of ``g`` only
    (no batch norm in training mode, whose statistics would span the groups)."""
    if len(groups) == 1:
        loss = loss_of(groups[0], syn)
        loss.backward()
        return loss.detach()
    leaf = syn.detach().requires_grad_()
    total = syn.new_zeros(())
    for grp in groups:
        part = loss_of(grp, leaf[grp])
        part.backward()
        total = total + part.detach()
    syn.backward(leaf.grad)
    return total


def even_chunk(n: int, cap: int) -> int:
    """The size of the equal chunks (the last may be smaller) that split ``n`` items into as
    few as a ``cap`` per chunk allows: ``n`` when it fits, else at most ``cap``."""
    if n <= 0:
        return 1
    return -(-n // -(-n // max(1, cap)))


def class_groups(k: int, per_class: int, budget: int) -> list[slice]:
    """Consecutive slices of the ``k`` classes, each holding at most ``budget`` elements
    when a class costs ``per_class`` (at least one class per group), in as few groups as
    that allows, all of one size but the last, which may be smaller (so that a compiled
    pass sees at most two shapes); one group, ``[slice(0, k)]``, whenever all fit."""
    if k <= 0:
        return []
    fit = max(1, min(k, budget // max(1, per_class)))
    n = -(-k // fit)
    size = -(-k // n)
    return [slice(start, min(start + size, k)) for start in range(0, k, size)]


class _Measured(BaseException):  # not caught by a model's own ``except Exception``
    """Raised by :func:`_measure_next`'s hook once a chunk's input to a layer is measured."""


class _Irregular(BaseException):
    """The chunks took different paths through the network: measure in one pass."""


_BatchNorm = nn.modules.batchnorm._BatchNorm


def batch_norm_statistics(net: nn.Module, x: Tensor, chunk: int) -> None:
    """Update the running statistics of ``net``'s batch-norm layers as one training-mode
    forward pass of the whole batch ``x`` would, with at most ``chunk`` images' activations
    at a time, and put every module of ``net`` in training mode.

    The reference code sets them from 16 real images per class in one pass, which grows
    with the classes (1000 classes at 64 px and width 128: about 30 GB per feature map).
    Above ``chunk`` the layers are measured one at a time, in the order the forward pass
    reaches them: the layers already measured normalise with the whole batch's statistics
    (eval mode, with those statistics as running ones), and each chunk's pass stops at the
    input of the layer being measured, whose per-chunk mean and variance are combined in
    float64. The running averages are then updated once, with each layer's momentum (or
    cumulative average), the batch's unbiased variance and one more batch tracked. That
    costs a forward pass up to each layer (about twice a whole pass for ConvNet-3, ten
    times for ResNet-18).

    It is one pass of the whole batch instead, as before, when the batch fits in a chunk,
    and for a network the layer-by-layer passes would not reproduce: one with dropout,
    other running statistics (a tracked instance norm), a batch-norm layer without running
    statistics or called more than once per pass, or paths that differ between chunks."""
    bns: list[nn.Module] = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    net.train()
    if x.shape[0] > chunk and bns and _measurable(net, bns, x[:1]):
        try:
            _chunked_statistics(net, bns, x, even_chunk(x.shape[0], chunk))
            return
        except _Irregular:
            pass  # nothing was changed: one pass instead
    with torch.no_grad():
        net(x)


def _measurable(net: nn.Module, bns: list[nn.Module], probe: Tensor) -> bool:
    """Whether layer-by-layer measurement gives one pass's statistics: every batch-norm
    layer has running statistics and is reached at most once by a pass (a one-image
    probe in eval mode, which changes nothing), and nothing else in ``net`` is random or
    keeps running statistics."""
    for m in net.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
        if not isinstance(m, _BatchNorm) and getattr(m, "running_mean", None) is not None:
            return False
    if any(m.running_mean is None for m in bns):
        return False
    calls = dict.fromkeys(bns, 0)

    def count(m: nn.Module, args: tuple[Tensor, ...]) -> None:
        calls[m] += 1

    hooks = [m.register_forward_pre_hook(count) for m in bns]
    try:
        net.eval()
        with torch.no_grad():
            net(probe)
    finally:
        for h in hooks:
            h.remove()
        net.train()
    return all(n <= 1 for n in calls.values())


def _chunked_statistics(net: nn.Module, bns: list[nn.Module], x: Tensor, chunk: int) -> None:
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]  # type: ignore[operator]
    measured: dict[nn.Module, tuple[Tensor, Tensor, int]] = {}  # mean, biased var, count
    with torch.no_grad():
        try:
            while len(measured) < len(bns):
                found = _measure_next(net, bns, x, chunk, measured)
                if found is None:  # the others are never reached: a pass leaves them alone
                    break
                layer, mean, var, n = found
                measured[layer] = (mean, var, n)
                layer.running_mean.copy_(mean)  # type: ignore[operator]
                layer.running_var.copy_(var)  # type: ignore[operator]
                layer.eval()  # from now on it normalises with the whole batch's statistics
        finally:
            for m, (mean0, var0) in zip(bns, saved, strict=True):
                m.running_mean.copy_(mean0)  # type: ignore[operator]
                m.running_var.copy_(var0)  # type: ignore[operator]
            net.train()
        for m, (mean, var, n) in measured.items():
            assert isinstance(m, _BatchNorm)
            m.num_batches_tracked.add_(1)  # type: ignore[union-attr]
            f = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)  # type: ignore[arg-type]
            unbiased = var * (n / max(n - 1, 1))
            m.running_mean.mul_(1 - f).add_(mean.to(m.running_mean.dtype), alpha=f)  # type: ignore[union-attr]
            m.running_var.mul_(1 - f).add_(unbiased.to(m.running_var.dtype), alpha=f)  # type: ignore[union-attr]


def _measure_next(
    net: nn.Module,
    bns: list[nn.Module],
    x: Tensor,
    chunk: int,
    measured: dict[nn.Module, tuple[Tensor, Tensor, int]],
) -> tuple[nn.Module, Tensor, Tensor, int] | None:
    """The first batch-norm layer the forward pass reaches that is not in ``measured``,
    with the per-channel mean and biased variance of its input over all of ``x`` (float64)
    and their count; None when no chunk reaches one. :class:`_Irregular` when the chunks
    do not all reach the same layer."""
    target: list[nn.Module] = []
    parts: list[tuple[int, Tensor, Tensor]] = []  # per chunk: count, mean, biased var

    def measure(m: nn.Module, args: tuple[Tensor, ...]) -> None:
        if m in measured:
            return
        if not target:
            target.append(m)
        if m is not target[0]:
            raise _Irregular
        t = args[0]
        dims = [0, *range(2, t.dim())]  # all but the channels: (N, C), (N, C, L), (N, C, H, W)
        var, mean = torch.var_mean(t, dims, correction=0)
        parts.append((t.numel() // t.shape[1], mean.double(), var.double()))
        raise _Measured

    hooks = [m.register_forward_pre_hook(measure) for m in bns]
    chunks = 0
    try:
        for start in range(0, x.shape[0], chunk):
            chunks += 1
            with contextlib.suppress(_Measured):
                net(x[start : start + chunk])
    finally:
        for h in hooks:
            h.remove()
    if not target:
        return None
    if len(parts) != chunks:  # some chunk passed the layer by
        raise _Irregular
    n = sum(c for c, _, _ in parts)
    mean = sum(c * mu for c, mu, _ in parts) / n
    # Chan et al.'s combination: within-chunk plus between-chunk sums of squares
    m2 = sum(c * (v + (mu - mean) ** 2) for c, mu, v in parts)
    return target[0], mean, m2 / n, n  # type: ignore[return-value]


def check_ipc(real: RealData, ipc: int, factor: int = 1, init: str = "real") -> None:
    """IPC must be >= 1 and no larger than the smallest class of the training split (the
    random real subset it is compared with takes ``ipc`` images of each); with a
    multi-formation ``factor``, which must divide the images, ``ipc * factor**2`` real
    images per class start the set, unless it starts from noise (``init``)."""
    smallest = min(real.class_counts("train"))
    if not isinstance(ipc, numbers.Integral) or isinstance(ipc, bool) or ipc < 1:
        raise ConfigError(f"IPC must be an integer >= 1; got {ipc!r}.")
    if ipc > smallest:
        raise ConfigError(
            f"IPC {ipc} exceeds the smallest class of {real.info.name} ({smallest} training "
            f"images); choose an IPC <= {smallest}."
        )
    if factor == 1:
        return
    check_factor(factor, real.info.image_size)
    if ipc * factor**2 > smallest and init != "noise":
        raise ConfigError(
            f"IPC {ipc} with a multi-formation factor of {factor} needs {ipc * factor**2} "
            f"images per class, more than the smallest class of {real.info.name} holds "
            f"({smallest}); choose a smaller IPC or factor."
        )


def kmeans_nearest(x: Tensor, k: int, seed: int, init: str | Tensor = "k-means++") -> Tensor:
    """Indices of ``k`` distinct rows of ``x`` (n, D): per centroid of a k-means fit
    (scikit-learn; ``init`` its start: scikit-learn's greedy k-means++, or (k, D) given
    centres such as :func:`kmeans_plus_plus`'s), the nearest row not taken by an earlier
    centroid."""
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    data = x.detach().cpu().float().flatten(1)
    if isinstance(init, Tensor):
        init = init.detach().cpu().float().flatten(1).numpy()  # type: ignore[assignment]
    with warnings.catch_warnings():  # duplicate rows: fewer distinct clusters, still k rows
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(data.numpy())
    centres = torch.from_numpy(fit.cluster_centers_).float()
    dist = torch.cdist(centres, data, compute_mode="donot_use_mm_for_euclid_dist")  # (k, n)
    taken = torch.zeros(data.shape[0], dtype=torch.bool)
    chosen = []
    for row in dist:
        i = int(row.masked_fill(taken, float("inf")).argmin())
        taken[i] = True
        chosen.append(i)
    return torch.tensor(chosen, dtype=torch.long)


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` starting centres for k-means: rows of ``x`` (n, D) drawn by k-means++ (each
    next row with probability proportional to its squared distance to the nearest one
    drawn), the plain rule rather than scikit-learn's greedy one, which tries 2 + log(k)
    candidates per centre: for 64 centres of 256 embeddings, a few milliseconds against
    about 40. Distances in float64; rows all alike are drawn uniformly (a start may then
    repeat a row, which the fit tolerates). Draws come from ``generator`` (on the CPU)."""
    data = x.detach().cpu().double().flatten(1)
    first = int(torch.randint(len(data), (1,), generator=generator))
    chosen = [first]
    d2 = (data - data[first]).square().sum(1)
    for _ in range(k - 1):
        weights = d2 if float(d2.sum()) > 0 else torch.ones_like(d2)  # all rows alike
        i = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(i)
        d2 = torch.minimum(d2, (data - data[i]).square().sum(1))
    return data[chosen].float()


@torch.no_grad()
def representative_indices(
    real: RealData,
    embed: Callable[[Tensor], Tensor],
    n: int,
    pool: int,
    generator: torch.Generator,
    device: torch.device,
    chunk: int = 1024,
) -> Tensor:
    """DREAM's representative real batch (Liu et al., ICCV 2023): per class, the training
    images nearest to the centroids of an ``m``-means clustering of the class in the
    feature space ``embed`` (a network's embedding), one distinct image per centroid
    (:func:`kmeans_nearest`; DREAM's nearest-image rule may pick one twice), so that the
    batch covers the class evenly instead of by chance. The fit starts from
    :func:`kmeans_plus_plus` (DREAM's starts from random images, which can leave two
    centres in one cluster). DREAM clusters all of the class's images; ``pool``
    > 0 clusters a random draw of that many instead (cheaper on a CPU, where the whole
    class can take longer than the matches it serves). As with
    :meth:`RealData.sample_indices_per_class`, m = min(n, largest class), and a class with
    at most m images (in its pool) gives them all in random order, cycled to m.

    The images are embedded class by class (one class's features in memory at a time) in
    chunks of one size, at most ``chunk``, each class's last one padded with zeros, so
    that a compiled ``embed`` sees one shape. Returns (K, m) training-split positions on
    the CPU; draws come from ``generator``."""
    per_class = real.class_indices("train")
    real.require_train_images()
    m = min(n, max(len(idx) for idx in per_class))
    pools = []
    for idx in per_class:
        if 0 < pool < len(idx):
            perm = torch.randperm(len(idx), generator=generator, device=generator.device)
            idx = idx[perm.cpu()[:pool]]
        pools.append(idx)
    clustered = [idx for idx in pools if len(idx) > m]
    feats = _class_embeddings(real, embed, clustered, device, chunk)
    rows = []
    for idx in pools:
        if len(idx) <= m:
            order = torch.randperm(len(idx), generator=generator, device=generator.device)
            rows.append(idx[order.cpu()[torch.arange(m) % len(idx)]])
            continue
        x = next(feats)  # this class's features (classes in order)
        if not bool(torch.isfinite(x).all()):
            raise RunError(
                "The matching network's embedding of the real images is not finite (the "
                "network diverged); lower lr_net, or use sampling=random."
            )
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))
        start = kmeans_plus_plus(x, m, torch.Generator().manual_seed(seed))
        rows.append(idx[kmeans_nearest(x, m, seed, init=start)])
    return torch.stack(rows)


def _class_embeddings(
    real: RealData,
    embed: Callable[[Tensor], Tensor],
    groups: list[Tensor],
    device: torch.device,
    chunk: int,
) -> Iterator[Tensor]:
    """``embed`` of the training images of each index tensor in ``groups`` in turn, (n_i,
    D) float32, in chunks of one size (the largest group's size, at most ``chunk``), each
    group's last chunk padded with zeros."""
    size = min(chunk, max((len(g) for g in groups), default=1))
    for g in groups:
        parts = []
        for start in range(0, len(g), size):
            x = real.train_images(g[start : start + size]).to(device)
            short = size - x.shape[0]
            if short:
                x = torch.cat([x, x.new_zeros(short, *x.shape[1:])])
            parts.append(embed(x)[: size - short].float().flatten(1))
        yield torch.cat(parts)


def init_synset(
    real: RealData,
    ipc: int,
    init: str,
    generator: torch.Generator,
    device: torch.device | None = None,
    factor: int = 1,
) -> SyntheticSet:
    """Synthetic pixels to start from: ``ipc`` random real images per class ("real"), the
    real images nearest to ``ipc`` k-means centroids of each class in input space
    ("kmeans": spread over the class's modes, a DREAM-style clustering start) or in the
    embedding of a ConvNet trained briefly on the training split ("kmeans-features", the
    network trained on ``device``), the images herding picks in that embedding ("herding":
    the herding baseline's choice, whose mean embedding stays close to the class's), or
    Gaussian noise.

    With a multi-formation ``factor`` above 1, ``ipc`` stored images per class each tile
    ``factor**2`` such real starts, downsampled (:class:`MultiFormationSet`); noise is
    drawn at the stored size."""
    check_ipc(real, ipc, factor, init)
    if factor == 1:
        return _init_pixels(real, ipc, init, generator, device)
    if init == "noise":  # drawn at the stored size: downsampling would shrink its scale
        noise = _init_pixels(real, ipc, init, generator, device)
        return MultiFormationSet(noise.images.detach(), real.info.num_classes, factor)
    start = _init_pixels(real, ipc * factor**2, init, generator, device)
    return MultiFormationSet.from_real(start.class_images().detach(), factor)


def _init_pixels(
    real: RealData,
    ipc: int,
    init: str,
    generator: torch.Generator,
    device: torch.device | None,
) -> PixelSet:
    info = real.info
    if init == "noise":
        shape = (info.channels, *info.image_size)
        return PixelSet.from_noise(info.num_classes, ipc, shape, generator)  # type: ignore[arg-type]
    if init == "kmeans" or init in FEATURE_INITS:
        spaces: Iterable[tuple[Tensor, Tensor]]  # per class: what the picks see, train indices
        if init in FEATURE_INITS:
            from datadistill.methods.features import all_class_features

            spaces = all_class_features(
                real,
                "convnet",
                FEATURE_INIT_WIDTH,
                FEATURE_INIT_STEPS,
                generator,
                device or torch.device("cpu"),
            )
        else:  # one class's pixels at a time
            on = real.train_x.device
            spaces = ((real.train_x[idx.to(on)], idx) for idx in real.class_indices("train"))
        if init == "herding":
            from datadistill.methods.coreset import herding

            picks = torch.cat([idx.cpu()[herding(x, ipc)] for x, idx in spaces])
        else:
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            picks = torch.cat([idx.cpu()[kmeans_nearest(x, ipc, seed)] for x, idx in spaces])
        chosen = real.train_x[picks.to(real.train_x.device)].cpu()
        return PixelSet.from_real(chosen.view(info.num_classes, ipc, *chosen.shape[1:]))
    images = torch.stack([real.sample(c, ipc, generator) for c in range(info.num_classes)]).cpu()
    return PixelSet.from_real(images)


def maybe_compile(
    fn: Callable[..., torch.Tensor], mode: str, device: torch.device, pixels: int
) -> Callable[..., torch.Tensor]:
    """``torch.compile`` ``fn`` for "yes", or for "auto" on CUDA / large inputs where the
    compiler works on ``device`` (:func:`datadistill._device.compiler_works`)."""
    use = mode == "yes" or (
        mode == "auto"
        and (device.type == "cuda" or pixels >= COMPILE_MIN_PIXELS)
        and compiler_works(device)
    )
    if not use:
        return fn
    return torch.compile(fn, dynamic=False)  # type: ignore[return-value]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of a no-grad real-data pass: "auto" is bfloat16 where ``device``
    computes it natively (see :func:`datadistill._device.native_bf16`), else float32."""
    if precision == "bfloat16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def autocast_to(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (a no-op context for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
