"""The evaluation protocol: fresh networks trained on a set, tested once on the test split.

Every reported accuracy sits beside a random real subset of the same size trained the
same way and a full-data reference under the same optimiser; both baselines are cached
per dataset, architecture (name and layers) and protocol, so that a sweep pays for them
once. Each network trained on the distilled set is cached too, by the set's bytes, so that
an interrupted evaluation goes on after the networks it finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from datadistill._device import prepare_device, resolve_device
from datadistill.artefact import TEACHER_KEY, Distilled
from datadistill.augment import DSA, DSAConfig
from datadistill.data import DatasetInfo, RealData
from datadistill.data.real import require_real_data
from datadistill.errors import ConfigError, DataError, first_difference, user_stacklevel
from datadistill.evaluation.protocols import Protocol, get_protocol
from datadistill.evaluation.train import accuracy, compiles, train_network
from datadistill.models import MODELS, create_model_for

# Seeds of the random real subsets differ from the network seeds by this offset.
RANDOM_SUBSET_SEED_OFFSET = 1_000_003
# Validation during distillation trains its network from the distillation seed plus this
# offset, never from one of the evaluation's network seeds (0, 1, ...): best-val selection
# would otherwise favour the state that suits test network 0's initialisation.
VALIDATION_SEED_OFFSET = 2_000_003


@dataclass(frozen=True)
class Result:
    """Per-seed accuracies (fractions in [0, 1]) and their mean and standard deviation."""

    accs: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs)

    @property
    def std(self) -> float:
        """The population standard deviation over seeds (ddof 0, as the reference code's
        ``np.std``); the sample one is ``sqrt(n / (n - 1))`` times larger."""
        return statistics.pstdev(self.accs) if len(self.accs) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"accs": list(self.accs), "mean": self.mean, "std": self.std}

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"


@dataclass(frozen=True)
class EvalReport:
    """Results per architecture: ``{arch: {"distilled": Result, "random": ..., "full": ...}}``."""

    protocol: Protocol
    ipc: int
    seeds: int
    results: dict[str, dict[str, Result]] = field(default_factory=dict)
    full_epochs: int | None = None  # None: no full-data reference was trained
    full_seeds: int | None = None
    # the lr the distilled set trained with: the set's learned lr where the protocol uses
    # one and the set has it, else the protocol's (the baselines always train with the latter)
    lr_distilled: float | None = None
    lr_learned: bool = False  # whether lr_distilled is the set's learned lr
    # the teacher whose soft labels the set carries (datadistill.labels) and that labelled
    # the random subset too; None: the set's own labels, a hard-labelled random subset
    teacher: dict[str, Any] | None = None
    # RawData.digest of the data the networks were trained and tested on (None: data
    # built without load_dataset), which may differ from the set's own (a warning says so)
    data_digest: str | None = None

    def __str__(self) -> str:
        """A plain table: test accuracy (%) per architecture, mean ± std over seeds."""
        from datadistill.report import plural  # (report imports the run, which imports this)

        seeds = plural(self.seeds, "seed")
        lines = [f"test accuracy (%), protocol {self.protocol.name}, IPC {self.ipc}, {seeds}"]
        if self.full_seeds is not None and self.full_epochs is not None:
            full = plural(self.full_seeds, "seed")
            lines[0] += f"; full data {self.full_epochs} epochs, {full}"
        if self.lr_learned and self.lr_distilled is not None:
            lines[0] += f"; the distilled set trained at its learned lr {self.lr_distilled:.4g}"
        kinds = ("distilled", "random", "full")
        table = [["architecture", "distilled", "random real subset", "full data"]]
        table += [
            [arch, *(str(rows[k]) if k in rows else "-" for k in kinds)]
            for arch, rows in self.results.items()
        ]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in table
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol.name,
            "protocol_config": self.protocol.to_dict(),
            "ipc": self.ipc,
            "seeds": self.seeds,
            "full_epochs": self.full_epochs,
            "full_seeds": self.full_seeds,
            "lr_distilled": self.lr_distilled,
            "lr_learned": self.lr_learned,
            "teacher": self.teacher,
            "data_digest": self.data_digest,
            "results": {
                arch: {kind: r.to_dict() for kind, r in rows.items()}
                for arch, rows in self.results.items()
            },
        }


def _dsa_for(info: DatasetInfo) -> DSA:
    return DSA(DSAConfig().for_dataset(info.allow_flip))


def train_and_test(
    images: Tensor,
    labels: Tensor,
    real: RealData,
    protocol: Protocol,
    arch: str,
    seed: int,
    *,
    soft_labels: Tensor | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    split: str = "test",
    device: torch.device | None = None,
) -> float:
    """Train one fresh ``arch`` network with ``protocol`` and return its accuracy on ``split``."""
    device = device or images.device
    g = torch.Generator().manual_seed(seed)
    info = real.info
    model = _evaluation_model(arch, info, g).to(device)
    train_network(
        model,
        images.to(device),
        labels.to(device),
        soft_labels=soft_labels.to(device) if soft_labels is not None else None,
        epochs=epochs if epochs is not None else protocol.epochs,
        lr=lr if lr is not None else protocol.lr,
        momentum=protocol.momentum,
        weight_decay=protocol.weight_decay,
        batch_size=protocol.batch_size,
        decay_at=protocol.decay_at,
        dsa=_dsa_for(info) if protocol.dsa else None,
        generator=g,
    )
    x, y = real.split(split)
    return accuracy(model, x.to(device), y.to(device))


def _evaluation_model(
    arch: str, info: DatasetInfo, generator: torch.Generator | None = None
) -> nn.Module:
    """A fresh ``arch`` network for ``info``'s images with the architecture's defaults: what
    evaluation trains, and what its cache key and lr warning describe."""
    return create_model_for(arch, info, generator=generator)


FULL_MIN_STEPS = 500  # SGD steps the full-data reference takes at least, by default


def full_reference_epochs(protocol: Protocol, real: RealData) -> int:
    """The full-data reference's default epochs: the protocol's ``full_epochs``, or more on
    a small training split, so that it takes at least ``FULL_MIN_STEPS`` SGD steps (fast's
    3 epochs are 633 steps on MNIST but 18 on scikit-learn's digits, which left the
    "full data" column below a random subset of 10 images per class)."""
    steps_per_epoch = -(-real.train_x.shape[0] // protocol.batch_size)
    return max(protocol.full_epochs, -(-FULL_MIN_STEPS // steps_per_epoch))


def _network(arch: str, info: DatasetInfo) -> str:
    """The layers ``arch`` has for ``info``'s images, as train_and_test builds it: part of a
    cached network's key, so that a network whose structure changed under the same name
    (e.g. a default depth) is trained again rather than read back. A network with classes
    of its own (a user's model, a plugin's) adds their source, which the versions in the
    key do not follow: an edited ``forward`` is another network."""
    with torch.device("meta"):  # structure only: no memory, no draw from the global RNG
        model = _evaluation_model(arch, info)
    key = repr(model)
    # what builds it (a registered class or factory) and the classes of its layers
    maker = MODELS.get(arch)
    while isinstance(maker, functools.partial):
        maker = maker.func
    makers = [maker, *(type(m) for m in model.modules())]
    names = {getattr(m, "__module__", None) or "?" for m in makers}
    modules = sorted(n for n in names if not n.startswith(_OURS))
    if modules:
        key += f" source {_source_digest(modules)}"
    return key


_OURS = ("datadistill.", "torch.")


def _source_digest(modules: Sequence[str]) -> str:
    """A digest of the source of ``modules``; one whose source cannot be read gets a
    digest unique to this call, so that what it builds is never read back."""
    h = hashlib.sha256()
    for name in modules:
        try:
            h.update(inspect.getsource(sys.modules[name]).encode())
        except (KeyError, OSError, TypeError):
            h.update(os.urandom(16))
    return h.hexdigest()[:16]


def _compiled_key(
    arch: str, info: DatasetInfo, n: int, epochs: int, dev: torch.device
) -> dict[str, bool]:
    """``{"compiled": True}`` when train_and_test would train ``n`` images for ``epochs``
    compiled (``train.compiles``), else ``{}``: part of a cached baseline's key, so that a
    baseline trained compiled (which rounds differently) is not read back for an eager
    run, nor the reverse; eager keys are those of the releases before compiled training."""
    with torch.device("meta"):  # the network's type is what counts: no memory, no draw
        net = _evaluation_model(arch, info)
    probe = torch.empty((1, info.channels, *info.image_size), device=dev)
    return {"compiled": True} if compiles(net, probe, n * epochs, None) else {}


def _random_acc(
    train: Callable[..., float],
    real: RealData,
    ipc: int,
    seed: int,
    label: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> float:
    """A random real subset's accuracy, soft-labelled by ``label(images, labels)`` when
    given."""
    x, y = random_subset(real, ipc, seed)
    return train(x, y, seed=seed, soft_labels=label(x, y) if label is not None else None)


def _warn_if_lr_learned_elsewhere(distilled: Distilled, archs: Sequence[str]) -> None:
    """A learned lr belongs to the network its experts had: say so when evaluation trains
    another one (e.g. width-32 CPU experts, width-128 evaluation)."""
    recipe = distilled.manifest.get("expert_recipe")
    if not (
        isinstance(recipe, dict)
        and isinstance(recipe.get("arch"), str)
        and type(recipe.get("width")) is int
        and 0 < recipe["width"] <= 1 << 16
    ):
        return  # none, or a damaged record: no network to compare the evaluated ones with
    info = distilled.info
    with torch.device("meta"):  # shapes only: no memory, no draw from the global RNG
        experts_net = create_model_for(recipe["arch"], info, recipe["width"])  # as the buffer
        shapes = [p.shape for p in experts_net.parameters()]
        evaluated = {arch: _evaluation_model(arch, info) for arch in archs}
    for arch, net in evaluated.items():
        if [p.shape for p in net.parameters()] != shapes:
            warnings.warn(
                f"The learned lr {distilled.lr:.4g} was learned for the experts' {recipe['arch']} "
                f"(width {recipe['width']}), but {arch} is evaluated with its defaults; pass "
                "lr-free protocols (e.g. dc) or experts of the evaluated network for a "
                "faithful comparison.",
                stacklevel=3,
            )


def _teacher_labels(
    distilled: Distilled,
    real: RealData,
    device: torch.device,
    baselines: bool,
    experts: str | Path | None = None,
) -> tuple[Callable[[Tensor, Tensor], Tensor] | None, dict[str, Any], str]:
    """For a set relabelled by a teacher: the function labelling the random subset with
    the same teacher (read from ``experts`` if its buffer moved there), the cache-key
    entry naming it, and a progress suffix."""
    entry = distilled.manifest.get(TEACHER_KEY)
    if entry is None or not baselines:
        return None, {}, ""
    from datadistill.labels import checked_teacher  # (imports experts)

    net, teacher, identity = checked_teacher(entry, real, device, experts)
    label = functools.partial(teacher.labels, net)
    return label, {"teacher": identity}, ", labelled by the set's teacher"


def random_subset(real: RealData, ipc: int, seed: int) -> tuple[Tensor, Tensor]:
    """``ipc`` random training images per class, ``((K*ipc, C, H, W), (K*ipc,))``."""
    g = torch.Generator().manual_seed(seed + RANDOM_SUBSET_SEED_OFFSET)
    k = real.info.num_classes
    per_class = [real.sample(c, ipc, g) for c in range(k)]
    labels = torch.cat([torch.full((x.shape[0],), c) for c, x in enumerate(per_class)])
    return torch.cat(per_class), labels


CACHE_ENV = "DATADISTILL_CACHE"


def _cache_dir(cache_dir: str | Path | None) -> Path | None:
    if cache_dir is False:  # type: ignore[comparison-overlap]
        return None
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    if env is not None and env.lower() == "off":  # e.g. while editing an editable install
        return None
    return Path(env) / "eval" if env else Path.home() / ".cache" / "datadistill" / "eval"


def _fingerprint(real: RealData) -> str:
    """Identifies the data a baseline was trained on: its description (name, normalisation,
    whitening) and the bytes of its training and test images and labels, so that an edited
    user dataset of the same size is not mistaken for the old one (about 0.1 s for MNIST)."""
    from datadistill.data.load import with_absolute_name

    info = with_absolute_name(real.info.to_dict())  # user data: `d.npz` is `./d.npz`
    h = hashlib.sha256(json.dumps(info, sort_keys=True).encode())
    for t in (real.train_x, real.train_y, real.test_x, real.test_y):
        _hash_tensor(h, t)
    return h.hexdigest()[:16]


def _hash_tensor(h: Any, t: Tensor | None) -> None:
    """Feed ``t``'s shape, dtype and bytes (any dtype, bfloat16 included) to ``h``."""
    if t is None:
        h.update(b"none")
        return
    t = t.detach().cpu().contiguous()
    h.update(str((tuple(t.shape), t.dtype)).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _set_fingerprint(
    images: Tensor, labels: Tensor, soft_labels: Tensor | None, lr: float | None
) -> str:
    """Identifies what networks trained on a distilled set see: its training images,
    labels, soft labels and the learned lr they train with."""
    h = hashlib.sha256(repr(None if lr is None else float(lr)).encode())
    for t in (images, labels, soft_labels):
        _hash_tensor(h, t)
    return h.hexdigest()[:16]


_UNWRITABLE_CACHES: set[Path] = set()  # cache folders a write failed in (warned about)


def _cached(
    cache: Path | None,
    key: dict[str, Any],
    compute: Callable[[], float],
    say: Callable[[str], None] = lambda _msg: None,
    what: str = "",
) -> float:
    """``compute()``'s accuracy, read from ``cache`` under ``key`` when it was computed
    before, else computed and written there; ``say(what)`` announces it (``(cached)``
    when read back)."""
    if cache is None:
        say(what)
        return compute()
    from datadistill import __version__

    # training code may change between releases, kernels between torch versions and devices
    key = {**key, "version": __version__, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache / f"{digest}.json"
    try:
        if path.is_file():
            acc = float(json.loads(path.read_text())["acc"])
            say(f"{what} (cached)")
            return acc
    except (ValueError, KeyError, OSError):
        pass  # a damaged or unreadable cache entry is recomputed
    say(what)
    acc = compute()
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")  # concurrent runs never share one
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "acc": acc}))
        tmp.replace(path)
    except BaseException as exc:  # no temporary file is left behind, whatever stopped it
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):  # Ctrl-C between the write and the rename
            raise
        # the trained network's result is kept; only its caching is lost
        if cache in _UNWRITABLE_CACHES:  # said once per folder and process
            return acc
        _UNWRITABLE_CACHES.add(cache)
        warnings.warn(
            f"The evaluation cache {cache} cannot be written ({exc.strerror or exc}), so these "
            f"networks will be trained again next time; set ${CACHE_ENV} to a writable "
            "folder or to 'off' (in Python: cache_dir=PATH or False).",
            stacklevel=2,
        )
    return acc


def _describe(info: DatasetInfo) -> str:
    h, w = info.image_size
    whitening = f", ZCA eps {info.zca_eps}" if info.zca else ""
    stats = "/".join(f"{m:.4g}" for m in info.mean)
    shape = f"{info.channels}x{h}x{w}, {info.num_classes} classes"
    return f"{info.name} ({shape}, mean {stats}{whitening})"


def dataset_of(
    distilled: Distilled,
    root: str | Path | None = None,
    data: str | None = None,
    use: str = "evaluate",
) -> RealData:
    """The dataset ``distilled`` came from, loaded again from ``root`` (the loaders'
    default when None) with the same splits, normalisation and whitening; a DataError if
    the files there no longer match it. ``data`` (``npz:PATH`` / ``imagefolder:PATH``)
    replaces the recorded name, for user data that has moved since. ``use`` names what the
    data is loaded for, in that error."""
    from datadistill._names import split_user_data
    from datadistill.data import DATASETS, load_dataset
    from datadistill.data.zca import DEFAULT_EPS

    opts = distilled.manifest.get("data", {})
    info = distilled.info
    if not isinstance(opts, dict) or not isinstance(opts.get("name", info.name), str):
        raise DataError(
            f"The set's manifest has a damaged 'data' entry ({opts!r}), which says how its "
            "dataset was loaded; re-create the set, or evaluate it with dd.evaluate and the "
            "data loaded yourself."
        )
    recorded = opts.get("name", info.name)
    if data is not None and split_user_data(data) is None:
        raise ConfigError(
            f"--dataset {data} is not user data (npz:PATH or imagefolder:PATH): it says where "
            "a set's own data has moved; drop it, and point --data-root at a builtin "
            "dataset's files."
        )
    if data is not None and recorded in DATASETS:
        raise ConfigError(
            f"This set came from the builtin dataset {recorded}, not from user data: drop "
            "--dataset, and point --data-root at its files."
        )
    name = data if data is not None else recorded
    user = split_user_data(name)
    path = Path(user[1]).expanduser() if user is not None else None
    if data is None and path is not None and not path.exists():
        where = "" if path.is_absolute() else " (from this folder)"
        raise DataError(
            f"The set was distilled from {name}, which is not there{where}; say where that "
            "data is now (datadistill evaluate / relabel --dataset, or dataset_of(..., data=))."
        )
    real = load_dataset(
        name,
        root,
        val_size=opts.get("val_size", 0.1),
        zca=info.zca,
        zca_eps=info.zca_eps if info.zca_eps is not None else DEFAULT_EPS,
        max_train=opts.get("max_train"),
        normalization=opts.get("normalization", "train"),
    )
    check_matches(distilled, real, use)  # e.g. another data root with other files
    if data is not None:  # the same data, moved: known by its recorded name (expert
        real.info = dataclasses.replace(real.info, name=recorded)  # buffers, caches)
    return real


def require_test_images(real: RealData, otherwise: str = "") -> None:
    """A DataError unless ``real`` has test images to score on (a tiny user set's carved
    test split can be empty); ``otherwise`` adds a way out (e.g. ``--no-evaluate``)."""
    if real.test_x.shape[0] == 0:
        raise DataError(
            f"{real.info.name} has no test images to score on (its test split is empty); "
            f"give it a test split (npz: x_test / y_test) or more images per class{otherwise}."
        )


def check_matches(distilled: Distilled, real: RealData, use: str = "evaluate") -> None:
    """``distilled`` lives in ``real``'s model-input space: same image shape, classes,
    normalisation and whitening; otherwise a :class:`DataError` saying what differs."""
    if not isinstance(distilled, Distilled):
        raise ConfigError(
            f"{use}() takes a Distilled set (from distill() or datadistill.load()), got "
            f"{type(distilled).__name__}."
        )
    require_real_data(real, use)
    d, r = distilled.info, real.info
    same = (
        (d.channels, tuple(d.image_size), d.num_classes)
        == (r.channels, tuple(r.image_size), r.num_classes)
        and len(d.mean) == len(r.mean) == len(d.std) == len(r.std)
        and all(
            abs(a - b) <= 1e-6 * max(1.0, abs(b))
            for a, b in zip((*d.mean, *d.std), (*r.mean, *r.std), strict=True)
        )
        and (d.zca, d.zca_eps) == (r.zca, r.zca_eps)
    )
    if not same:
        # the mean and std come from the training split, which val_size / max_train change
        split = (
            " (the mean and std come from the training split: load it with the "
            "normalization, val_size and max_train the set was distilled with)"
            if d.name == r.name
            and (d.channels, tuple(d.image_size), d.num_classes, d.zca, d.zca_eps)
            == (r.channels, tuple(r.image_size), r.num_classes, r.zca, r.zca_eps)
            else ""
        )
        raise DataError(
            f"This set was distilled from {_describe(d)} but the real data is {_describe(r)}; "
            f"{use} it with the dataset it came from, loaded with the same normalisation "
            f"and whitening{split}."
        )
    differ = (
        first_difference(
            list(d.class_names),
            list(r.class_names),
            "in this set",
            "in the real data",
            "class_names",
        )
        if d.class_names and r.class_names  # a set without names is held to the rest only
        else ""
    )
    if differ:
        raise DataError(
            f"The class names differ ({differ}): the set's labels would mean other classes. "
            f"{use.capitalize()} it with the dataset it came from, its classes in the same "
            "order."
        )


# a test split of fewer images per class than this warns that its accuracies are noise
MIN_TEST_PER_CLASS = 10


def warn_if_small_test(real: RealData) -> None:
    """A warning when ``real``'s test split is too small to tell sets apart (fewer than
    ``MIN_TEST_PER_CLASS`` images per class) or lacks a class (a tiny user set, whose
    carved test split cannot cover every class)."""
    k = real.num_classes
    counts = torch.bincount(real.test_y.cpu(), minlength=k)
    n = int(counts.sum())
    names = real.info.class_names  # may be empty for data built by hand
    missing = [
        names[i] if i < len(names) else str(i)
        for i in torch.nonzero(counts == 0).flatten().tolist()
    ]
    if n >= MIN_TEST_PER_CLASS * k and not missing:
        return
    lacks = ""
    if missing:
        shown = ", ".join(repr(c) for c in missing[:3]) + (", ..." if len(missing) > 3 else "")
        lacks = f", none of class{'es' if len(missing) > 1 else ''} {shown}"
    warnings.warn(
        f"The test split of {real.info.name} has {n} image{'s' if n != 1 else ''} "
        f"({n / k:.3g} per class{lacks}), so its accuracies are mostly noise (one image is "
        f"{100 / n:.3g} points); give it a test split of at least {MIN_TEST_PER_CLASS * k} "
        "images (npz: x_test / y_test, imagefolder: train/ and test/ folders) or more "
        "images per class.",
        stacklevel=user_stacklevel(),
    )


def warn_if_other_data(distilled: Distilled, real: RealData) -> None:
    """A warning when ``real`` was read from other files than ``distilled`` was distilled
    from (``RawData.digest`` differs: an edited image or label, another copy of the data);
    silent when either side has no digest (older sets, a RealData built by hand)."""
    recorded = distilled.manifest.get("data")
    was = recorded.get("digest") if isinstance(recorded, dict) else None
    now = real.digest
    if isinstance(was, str) and now is not None and was != now:
        warnings.warn(
            f"The real data differ from those this set was distilled from (digest {was} "
            f"then, {now} now: other images or labels with the same shapes and statistics), "
            "so its results here are not comparable with its recorded ones; evaluate it with "
            "the files it came from to reproduce them.",
            stacklevel=user_stacklevel(),
        )


def evaluate(
    distilled: Distilled,
    real: RealData,
    protocol: str | Protocol = "dc",
    archs: str | Sequence[str] | None = None,
    seeds: int | None = None,
    *,
    baselines: bool = True,
    full: bool = True,
    full_epochs: int | None = None,
    full_seeds: int | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[str], None] | None = None,
    teacher_experts: str | Path | None = None,
) -> EvalReport:
    """Train fresh networks on ``distilled`` and report test accuracy beside the baselines.

    Args:
        distilled: the distilled set (images in ``real``'s model-input space).
        real: the dataset it was distilled from; only its test split is used for
            scoring, and its train split for the baselines.
        protocol: a registered protocol name or a :class:`Protocol`.
        archs: architectures to train (cross-architecture evaluation); default the
            protocol's.
        seeds: fresh networks per number; default the protocol's.
        full_epochs / full_seeds: budget of the full-data reference (default the
            protocol's ``full_epochs``, raised on small training splits to
            ``FULL_MIN_STEPS`` SGD steps, see :func:`full_reference_epochs`, and its
            ``seeds``).
        cache_dir: where each trained network's accuracy is cached, the baselines' and
            the set's (``False`` disables caching); by default
            ``$DATADISTILL_CACHE/eval``, else ``~/.cache/datadistill/eval``
            (``DATADISTILL_CACHE=off`` disables it).
        teacher_experts: for a set relabelled by a teacher (``relabel``), where the
            teacher's expert buffer is now if it has moved since; it must hold the same
            network (checked), which labels the random subset.
    """
    check_matches(distilled, real)
    warn_if_other_data(distilled, real)
    require_test_images(real)
    warn_if_small_test(real)
    proto = get_protocol(protocol)
    dev = prepare_device(resolve_device(device))
    archs = [archs] if isinstance(archs, str) else (list(archs) if archs else [proto.arch])
    # registered spellings, so that "ConvNet" and "convnet" share report keys and cache
    # (and are trained once)
    archs = list(dict.fromkeys(MODELS.canonical(a) for a in archs))
    n_seeds = seeds if seeds is not None else proto.seeds
    for name, value in (("seeds", n_seeds), ("full_seeds", full_seeds)):
        if value is not None and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            raise ConfigError(f"{name} must be an int >= 1; got {value!r}.")
    n_full = full_seeds if full_seeds is not None else n_seeds
    if full_epochs is not None and (
        not isinstance(full_epochs, int) or isinstance(full_epochs, bool) or full_epochs < 1
    ):
        raise ConfigError(f"full_epochs (--full-epochs) must be an int >= 1; got {full_epochs!r}.")
    f_epochs = full_epochs if full_epochs is not None else full_reference_epochs(proto, real)
    ipc = distilled.ipc
    lr = distilled.lr if (proto.learned_lr and distilled.lr is not None) else None
    if lr is not None and not (math.isfinite(float(lr)) and float(lr) > 0):
        raise DataError(
            f"The set's learned lr is {float(lr):g}, which cannot train a network (a set "
            f"distilled before the lr was kept positive); evaluate it under a protocol with "
            f"a fixed lr, e.g. --protocol dc."
        )
    if lr is not None:
        _warn_if_lr_learned_elsewhere(distilled, archs)
    cache = _cache_dir(cache_dir)
    fp = _fingerprint(real)
    say = progress or (lambda _msg: None)
    # a set relabelled by a teacher (datadistill.labels) is compared with a random subset
    # labelled by the same teacher: both sides trained the same way
    label, teacher_key, labelled_by = _teacher_labels(
        distilled, real, dev, baselines, teacher_experts
    )
    report = EvalReport(
        protocol=proto,
        ipc=ipc,
        seeds=n_seeds,
        full_epochs=f_epochs if full else None,
        full_seeds=n_full if full else None,
        lr_distilled=float(lr) if lr is not None else proto.lr,
        lr_learned=lr is not None,
        teacher=distilled.manifest.get(TEACHER_KEY),
        data_digest=real.digest,  # of the data the networks see
    )
    images, labels, soft = distilled.training_set()  # decoded if multi-formation
    set_fp = _set_fingerprint(images, labels, soft, lr)
    for arch in archs:
        rows: dict[str, Result] = {}
        train = functools.partial(train_and_test, real=real, protocol=proto, arch=arch, device=dev)
        base = {
            "data": fp,
            "arch": arch,
            "network": _network(arch, real.info),
            "protocol": proto.to_dict(),
            "device": dev.type,
        }
        # each network trained on the set is cached as a baseline is: an evaluation that
        # stops (Ctrl-C, a lost machine) goes on after the networks it finished
        accs = []
        distilled_key: dict[str, Any] = {**base, "kind": "distilled", "set": set_fp}
        distilled_key |= _compiled_key(arch, real.info, images.shape[0], proto.epochs, dev)
        for s in range(n_seeds):
            what = f"{arch}: distilled set, seed {s}"
            run_distilled = functools.partial(
                train, images, labels, seed=s, soft_labels=soft, lr=lr
            )
            accs.append(_cached(cache, {**distilled_key, "seed": s}, run_distilled, say, what))
        rows["distilled"] = Result(tuple(accs))
        if baselines:
            accs = []
            n_random = sum(min(ipc, n) for n in real.class_counts("train"))  # as sampled
            random_compiled = _compiled_key(arch, real.info, n_random, proto.epochs, dev)
            for s in range(n_seeds):
                what = f"{arch}: random real subset, seed {s}{labelled_by}"
                key = {**base, "kind": "random", "ipc": ipc, "seed": s}
                key |= teacher_key | random_compiled
                run_random = functools.partial(_random_acc, train, real, ipc, s, label)
                accs.append(_cached(cache, key, run_random, say, what))
            rows["random"] = Result(tuple(accs))
        if full:
            accs = []
            n_train = real.train_x.shape[0]
            full_compiled = _compiled_key(arch, real.info, n_train, f_epochs, dev)
            for s in range(n_full):
                epochs = f"{f_epochs} epoch{'' if f_epochs == 1 else 's'}"
                what = f"{arch}: full training set ({n_train} images, {epochs}), seed {s}"
                key = {**base, "kind": "full", "epochs": f_epochs, "seed": s, **full_compiled}
                run_full = functools.partial(
                    train, real.train_x, real.train_y, seed=s, epochs=f_epochs
                )
                accs.append(_cached(cache, key, run_full, say, what))
            rows["full"] = Result(tuple(accs))
        report.results[arch] = rows
    return report
