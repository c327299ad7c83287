"""Expert trajectories: networks trained on real data, their parameters kept every epoch.

Trajectory matching (MTT, TESLA, DATM) trains students to reproduce stretches of these
trajectories. A buffer is a folder::

    manifest.json              architecture, dataset, normalisation, recipe, parameter layout
    expert_0000.safetensors    "trajectory": (epochs + 1, P) flat parameters, epoch 0 = init
    expert_0001.safetensors
    expert_0002.partial/       an interrupted expert, one file per finished epoch:
        epoch_0000.safetensors     its parameters, the generator's state (and SGD momentum)

Experts are independent, so ``train_experts`` runs them in parallel processes (one per
device when several GPUs are present), skips finished ones and continues partial ones
from their last finished epoch: an interrupted ``datadistill experts`` is resumed by
running it again. :class:`ExpertBuffer` reads single epochs of single experts lazily
(safetensors slices), so a buffer never has to fit in memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from datadistill._device import prepare_device, resolve_device
from datadistill._files import share_like_new_files
from datadistill.augment import DSA, DSAConfig
from datadistill.data import DatasetInfo, RealData
from datadistill.data.load import absolute_dataset_name
from datadistill.errors import ConfigError, DataError, RunError, first_difference
from datadistill.evaluation.train import accuracy, compiles, train_network
from datadistill.models import check_width_applies, create_model_for, takes_width

FORMAT = "datadistill-experts/1"
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class ExpertRecipe:
    """How each expert is trained (the MTT paper's buffer recipe by default)."""

    arch: str = "convnet"
    width: int = 128  # network width (ConvNets, MLP: see takes_width; refused for others)
    epochs: int = 50
    lr: float = 0.01  # lr_teacher
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"The expert {name} must be an int >= 1; got {v!r}.")
        if not (isinstance(self.arch, str) and self.arch):
            raise ConfigError(f"The expert arch must be a model name; got {self.arch!r}.")
        if not isinstance(self.dsa, bool):  # "no" would be truthy: experts with DSA
            raise ConfigError(f"The expert dsa must be True or False; got {self.dsa!r}.")
        lr = self.lr
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr < math.inf):
            raise ConfigError(f"The expert lr must be a finite number > 0; got {self.lr!r}.")
        m, wd = self.momentum, self.weight_decay
        if not (isinstance(m, (int, float)) and not isinstance(m, bool) and 0 <= m < 1):
            raise ConfigError(f"The expert momentum must be a number in [0, 1); got {m!r}.")
        if not (isinstance(wd, (int, float)) and not isinstance(wd, bool) and 0 <= wd < math.inf):
            raise ConfigError(f"The expert weight decay must be a finite number >= 0; got {wd!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def data_fingerprint(real: RealData) -> dict[str, Any]:
    """What must agree between a buffer and the data a method distils."""
    return {
        # user data by its absolute path, so that `npz:x.npz` and `npz:./x.npz` agree
        "dataset": absolute_dataset_name(real.info.name),
        "channels": real.info.channels,
        "image_size": list(real.info.image_size),
        "num_classes": real.info.num_classes,
        "mean": list(real.info.mean),
        "std": list(real.info.std),
        "zca": bool(real.info.zca),
        # the regulariser shapes the whitened space; buffers written before it was
        # recorded lack the key and are not held to it (``fingerprint_difference``)
        "zca_eps": real.info.zca_eps if real.info.zca else None,
        # the files read (RawData.digest): the same name and statistics with other images
        # or labels is other data; None for a RealData built without load_dataset
        "digest": real.digest,
    }


def fingerprint_difference(
    recorded: dict[str, Any], current: dict[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first ``(key, recorded value, current value)`` on which a buffer's data
    fingerprint and the current data's differ, or ``None``."""
    for key, value in current.items():
        if key == "zca_eps" and key not in recorded:
            continue
        if key == "digest" and (recorded.get(key) is None or value is None):
            continue  # a buffer from before digests were recorded, or data without one
        if key == "dataset" and isinstance(recorded.get(key), str):
            # buffers written before the path was made absolute hold it as typed
            if absolute_dataset_name(recorded[key]) == value:
                continue
        if recorded.get(key) != value:
            return key, recorded.get(key), value
    return None


def expert_file(root: Path, index: int, partial: bool = False) -> Path:
    """The finished expert's file, or (``partial``) the folder of an unfinished one."""
    if partial:
        return root / f"expert_{index:04d}.partial"
    return root / f"expert_{index:04d}.safetensors"


def _finished_metadata(path: Path) -> dict[str, str]:
    """A finished expert's metadata; a DataError if its file is truncated or corrupt."""
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        raise DataError(
            f"Cannot read expert {path} ({exc}); delete it and run the same `datadistill "
            "experts` command to train it again."
        ) from None


def _epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.safetensors"


def _finished_epochs(folder: Path) -> int:
    """How many epochs of an unfinished expert are on disk (-1: not even its init)."""
    done = -1
    while _epoch_file(folder, done + 1).is_file():
        done += 1
    return done


def _legacy_partial(root: Path, index: int) -> Path:
    """Where earlier versions kept an unfinished expert (one file rewritten every epoch)."""
    return root / f"expert_{index:04d}.partial.safetensors"


def _convert_legacy_partial(root: Path, index: int, folder: Path) -> None:
    """Earlier versions kept an unfinished expert as one file rewritten every epoch
    (``expert_0002.partial.safetensors``); split it into per-epoch files to resume it."""
    legacy = _legacy_partial(root, index)
    if not legacy.is_file():
        return
    try:
        with safe_open(str(legacy), "pt") as f:
            traj = f.get_tensor("trajectory").clone()  # (a copy: the file is deleted below)
            keys = ("generator", "momentum")
            extra = {k: f.get_tensor(k).clone() for k in keys if k in f.keys()}
    except Exception as exc:  # truncated or corrupt file of an earlier version
        raise DataError(
            f"Cannot read the unfinished expert {legacy} ({exc}); delete it to train that "
            f"expert again."
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    last = traj.shape[0] - 1
    for e in range(last + 1):
        tensors = {"params": traj[e], **(extra if e == last else {})}
        _save_atomic(tensors, _epoch_file(folder, e), {})
    legacy.unlink()


def _layout(net: nn.Module) -> dict[str, Any]:
    return {
        "names": [n for n, _ in net.named_parameters()],
        "shapes": [list(p.shape) for _, p in net.named_parameters()],
    }


def _flat(net: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).cpu()


def _read_manifest(path: Path, advice: str = "") -> dict[str, Any]:
    """An expert buffer's manifest, or one DataError (ending in ``advice``) saying why not."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read the expert manifest {path}: {exc}{advice}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a datadistill expert buffer ({FORMAT}){advice}.")
    return manifest


def _write_manifest(root: Path, real: RealData, recipe: ExpertRecipe, seed: int) -> None:
    net = create_model_for(recipe.arch, real.info, recipe.width, torch.Generator().manual_seed(0))
    fingerprint = data_fingerprint(real)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "data": fingerprint,
        "info": real.info.to_dict(),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "layout": _layout(net),
        "num_params": sum(p.numel() for p in net.parameters()),
    }
    path = root / MANIFEST
    if path.is_file():
        old = _read_manifest(path, "; choose another --out folder, or delete this one")
        for key in ("data", "recipe", "seed"):
            if key == "data" and isinstance(old.get(key), dict):
                same = fingerprint_difference(old[key], fingerprint) is None
            else:
                same = old.get(key) == manifest[key]
            if not same:
                diff = first_difference(old.get(key), manifest[key], "there", "here", key)
                raise ConfigError(
                    f"{root} already holds experts with another {key} ({diff}); "
                    f"choose another --out folder or the same settings to add to it."
                )
        if old.get("layout") != manifest["layout"]:  # same name, other layers (a version's
            # default depth): their partial trajectories would not fit this network
            raise DataError(
                f"{root} holds experts of another version's {recipe.arch} (its layers "
                "differ); choose another --out folder or delete this one."
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)


def _save_atomic(tensors: dict[str, Tensor], path: Path, meta: dict[str, str]) -> None:
    """Write ``path`` so that it is either absent or complete, also after a power loss (the
    data reaches the disk before the rename, and the rename before the caller goes on)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    share_like_new_files(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # no directory handles (e.g. Windows): the rename is all we can do
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_partial(root: Path, index: int) -> None:
    """Drop what an unfinished expert left behind once its finished file exists."""
    shutil.rmtree(expert_file(root, index, partial=True), ignore_errors=True)
    _legacy_partial(root, index).unlink(missing_ok=True)


def train_expert(
    real: RealData,
    recipe: ExpertRecipe,
    root: Path,
    index: int,
    seed: int,
    device: torch.device,
    log: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Train (or finish) expert ``index``; returns its finished file.

    Each finished epoch is written once, to its own file in the expert's ``.partial``
    folder (with the generator's state and the SGD momentum needed to continue), so the
    disk traffic grows linearly with the epochs and only the current parameters stay in
    memory; the finished expert is assembled into one file at the end.
    """
    final = expert_file(root, index)
    if final.is_file():
        _remove_partial(root, index)  # left by a crash after the final file was written
        return final
    folder = expert_file(root, index, partial=True)
    _convert_legacy_partial(root, index, folder)
    g = torch.Generator().manual_seed(seed * 100_003 + index)
    net = create_model_for(recipe.arch, real.info, recipe.width, g).to(device)
    opt = torch.optim.SGD(
        net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    epoch = _finished_epochs(folder)
    if epoch < 0:  # a fresh expert: its initialisation is epoch 0
        folder.mkdir(parents=True, exist_ok=True)
        epoch = 0
        tensors = {"params": _flat(net), "generator": g.get_state()}
        _save_atomic(tensors, _epoch_file(folder, 0), {})
    else:  # continue an interrupted expert from its last finished epoch
        path = _epoch_file(folder, epoch)
        try:
            with safe_open(str(path), "pt") as f:
                # (safetensors maps the file: copy what outlives it)
                params = f.get_tensor("params").clone()
                state = f.get_tensor("generator").clone()
                opt_state = f.get_tensor("momentum").clone() if "momentum" in f.keys() else None
        except Exception as exc:  # truncated or corrupt file, or one without a generator
            raise DataError(
                f"Cannot resume expert {index} from {path} ({exc}); delete the folder "
                f"{folder} to train this expert from the start."
            ) from None
        g.set_state(state)
        with torch.no_grad():  # (params is a fresh copy: the parameters may alias it)
            torch.nn.utils.vector_to_parameters(params.to(device), net.parameters())
        if opt_state is not None:
            _set_momentum(opt, net, opt_state.to(device))
    dsa = DSA(DSAConfig().for_dataset(real.info.allow_flip)) if recipe.dsa else None
    x, y = real.train_x.to(device), real.train_y.to(device)
    # decided once for the whole trajectory (each call below trains one epoch)
    compile_mode = "yes" if compiles(net, x, recipe.epochs * len(x), None) else "no"
    while epoch < recipe.epochs:
        train_network(
            net,
            x,
            y,
            epochs=1,
            lr=recipe.lr,
            generator=g,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            batch_size=recipe.batch_size,
            decay_at=2.0,  # constant lr: one epoch at a time
            dsa=dsa,
            optimizer=opt,
            compile=compile_mode,
        )
        epoch += 1
        params = _flat(net)
        if not bool(torch.isfinite(params).all()):  # never saved: the epochs before stay
            raise RunError(
                f"Expert {index} diverged in epoch {epoch} (its weights became non-finite "
                f"at lr {recipe.lr}); the epochs before it are kept in {folder}. Train the "
                "buffer again into a new --out with a lower --lr."
            )
        tensors = {"params": params, "generator": g.get_state()}
        if recipe.momentum:
            tensors["momentum"] = _get_momentum(opt, net)
        _save_atomic(tensors, _epoch_file(folder, epoch), {})
        log(f"expert {index}: epoch {epoch}/{recipe.epochs}")
    val_acc = accuracy(net, real.val_x.to(device), real.val_y.to(device))
    trajectory = torch.empty(recipe.epochs + 1, sum(p.numel() for p in net.parameters()))
    for e in range(recipe.epochs + 1):
        path = _epoch_file(folder, e)
        try:
            with safe_open(str(path), "pt") as f:
                trajectory[e].copy_(f.get_tensor("params"))
        except Exception as exc:  # truncated or corrupt file
            raise DataError(
                f"Cannot assemble expert {index}: {path} is unreadable ({exc}); delete the "
                f"folder {folder} to train this expert again."
            ) from None
    _save_atomic(
        {"trajectory": trajectory},
        final,
        {"index": str(index), "val_acc": f"{val_acc:.6f}", "epochs": str(recipe.epochs)},
    )
    _remove_partial(root, index)
    log(f"expert {index}: done, validation accuracy {100 * val_acc:.2f}%")
    return final


def _get_momentum(opt: torch.optim.Optimizer, net: nn.Module) -> Tensor:
    bufs = []
    for p in net.parameters():
        buf = opt.state.get(p, {}).get("momentum_buffer")
        bufs.append((buf if buf is not None else torch.zeros_like(p)).detach().reshape(-1))
    return torch.cat(bufs).cpu()


def _set_momentum(opt: torch.optim.Optimizer, net: nn.Module, flat: Tensor) -> None:
    start = 0
    for p in net.parameters():
        n = p.numel()
        opt.state[p]["momentum_buffer"] = flat[start : start + n].view_as(p).clone()
        start += n


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(args: tuple[Any, ...]) -> list[str]:
    real, recipe, root, indices, seed, device, threads = args
    if threads:
        torch.set_num_threads(threads)
    dev = prepare_device(torch.device(device))
    done = []
    for i in indices:
        done.append(str(train_expert(real, recipe, Path(root), i, seed, dev, log=print)))
    return done


def worker_devices(device: torch.device, workers: int, gpus: int) -> list[str]:
    """The device of each expert worker: a bare ``cuda`` spreads them over the ``gpus``
    GPUs (worker w on ``cuda:w % gpus``); ``cuda:N`` keeps every worker on GPU N, as it
    does with one worker; the CPU is shared."""
    if device.type == "cuda" and device.index is None and gpus > 0:
        return [f"cuda:{w % gpus}" for w in range(workers)]
    return [str(device)] * workers


def train_experts(
    real: RealData,
    out: str | Path,
    num: int,
    recipe: ExpertRecipe = ExpertRecipe(),
    *,
    seed: int = 0,
    workers: int = 1,
    device: str | torch.device = "auto",
    log: Callable[[str], None] = print,
) -> ExpertBuffer:
    """Train ``num`` experts into ``out`` (resuming whatever is there) and open the buffer.

    ``workers`` > 1 trains experts in that many processes; with ``device="cuda"`` (or
    ``"auto"``) on several GPUs, worker w uses ``cuda:w % count``, with ``"cuda:N"`` every
    worker uses GPU N; on the CPU the threads are shared out between the workers.
    """
    if not isinstance(num, int) or num < 1:
        raise ConfigError(f"The number of experts must be an int >= 1; got {num!r}.")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an int >= 1; got {workers!r}.")
    default_width = ExpertRecipe.__dataclass_fields__["width"].default
    check_width_applies(recipe.arch, recipe.width, default_width, "experts")
    root = Path(out)
    _write_manifest(root, real, recipe, seed)
    todo = [i for i in range(num) if not expert_file(root, i).is_file()]
    for i in set(range(num)) - set(todo):
        _finished_metadata(expert_file(root, i))  # readable (before its epochs are removed)
        _remove_partial(root, i)  # leftovers of a crash after the expert finished
    dev = prepare_device(resolve_device(device))
    workers = min(workers, max(1, len(todo)))
    if workers == 1 or not todo:
        for i in todo:
            train_expert(real, recipe, root, i, seed, dev, log=log)
    else:
        import multiprocessing as mp

        threads = 0 if dev.type == "cuda" else max(1, torch.get_num_threads() // workers)
        cpu_real = real.to("cpu")
        gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
        jobs = [
            (cpu_real, recipe, str(root), todo[w::workers], seed, d, threads)
            for w, d in enumerate(worker_devices(dev, workers, gpus))
        ]
        # Ctrl-C reaches every process of the terminal's group: the workers ignore it (from
        # their start: a spawned child inherits the ignored signal while it imports torch),
        # and the parent stops them; their finished epochs are on disk
        # (only the main thread may set handlers; None: one not set from Python, left alone)
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if main else None
        if previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            pool = mp.get_context("spawn").Pool(workers, initializer=_ignore_sigint)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        with pool:
            pool.map(_worker, jobs)
    return ExpertBuffer(root)


def calibrate_batch_norm(
    net: nn.Module,
    real: RealData,
    generator: torch.Generator,
    forward: Callable[[Tensor], Tensor] | None = None,
) -> None:
    """Buffers store parameters, not batch-norm running statistics: estimate ``net``'s from
    a class-balanced real batch (up to 512 images) drawn with ``generator``, through
    ``forward`` (default ``net`` itself; e.g. a ``functional_call`` with an expert's flat
    parameters), so that eval-mode logits use the expert's own statistics rather than a
    fresh network's. A no-op without batch norm; ``net``'s mode and momenta are kept."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    per_class = max(1, 512 // real.info.num_classes)
    counts = real.class_counts()
    x = torch.cat([real.sample(c, min(n, per_class), generator) for c, n in enumerate(counts)])
    device = next(net.parameters()).device
    saved, training = [m.momentum for m in norms], net.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the chunks
    net.train()
    with torch.no_grad():
        for chunk in x.split(256):
            (forward or net)(chunk.to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    net.train(training)


class ExpertBuffer:
    """A folder of expert trajectories, read lazily one (expert, epoch) at a time."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(
                f"No expert buffer at {self.root} (no {MANIFEST}); create one with "
                f"`datadistill experts --dataset ... --out {self.root}`."
            )
        self.manifest = _read_manifest(path)
        self.files = sorted(self.root.glob("expert_[0-9][0-9][0-9][0-9].safetensors"))
        if not self.files:
            raise DataError(
                f"The expert buffer {self.root} holds no finished expert yet; finish it by "
                f"running the same `datadistill experts` command again."
            )
        try:
            self.recipe = ExpertRecipe(**self.manifest["recipe"])
            self.num_params = int(self.manifest["num_params"])
            for key in ("data", "info", "layout"):
                if not isinstance(self.manifest.get(key), dict):
                    raise KeyError(key)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise DataError(
                f"The expert manifest {path} is incomplete or invalid ({type(exc).__name__}: "
                f"{exc}); retrain the buffer with `datadistill experts`."
            ) from None
        self.epochs = self.recipe.epochs

    def __len__(self) -> int:
        return len(self.files)

    def names(self) -> list[str]:
        """The file names of the finished experts this buffer reads, in order."""
        return [p.name for p in self.files]

    def keep_only(self, names: list[str]) -> None:
        """Read exactly the experts ``names`` (a resumed run's), whatever was added since."""
        have = {p.name: p for p in self.files}
        missing = [n for n in names if n not in have]
        if missing:
            raise DataError(
                f"The expert buffer {self.root} no longer holds {missing[0]}, which this run "
                f"was drawing from; restore it, or start a new run instead of resuming."
            )
        self.files = [have[n] for n in names]

    @property
    def info(self) -> DatasetInfo:
        try:
            return DatasetInfo.from_dict(self.manifest["info"])
        except DataError as exc:  # named, so that the user knows which buffer to re-create
            raise DataError(f"{self.root / 'manifest.json'}: {exc}") from None

    def check(self, real: RealData, arch: str | None = None, width: int | None = None) -> None:
        """One clear error if the buffer was trained on other data or another network."""
        diff = fingerprint_difference(self.manifest["data"], data_fingerprint(real))
        if diff is not None:
            key, mine, theirs = diff
            fix = "train experts for this data"
            if key in ("zca", "zca_eps"):  # the same data, loaded another way
                how = (
                    f"load_dataset(..., zca=True, zca_eps={mine})"
                    if key == "zca_eps"
                    else f"{'with' if mine else 'without'} --zca"
                )
                fix = f"load the data as the buffer was ({how}), or {fix}"
            elif key == "digest":  # the same name and statistics, other files
                fix = (
                    "its images or labels differ from those the experts were trained on (an "
                    f"edited file, another copy): use those files, or {fix}"
                )
            elif key in ("mean", "std"):  # the same data, another training split
                fix = (
                    "if the data itself is unchanged, its training split differs (the mean "
                    "and std come from it): load it with the --val-size / --max-train used "
                    f"when the experts were trained, or {fix}"
                )
            raise ConfigError(
                f"The expert buffer {self.root} was trained with {key}={mine!r}, "
                f"but the data has {key}={theirs!r}; {fix}."
            )
        # one class order (say, an image folder's read in sorted folder order)
        mine, theirs = list(self.info.class_names), list(real.info.class_names)
        differ = (
            first_difference(mine, theirs, "in the buffer", "in the data", "class_names")
            if mine and theirs
            else ""
        )
        if differ:
            raise ConfigError(
                f"The expert buffer {self.root} was trained with other classes ({differ}); "
                "its labels would mean other classes: load the data as the buffer was "
                "trained, or train experts for it."
            )
        if arch is not None and arch.lower() != self.recipe.arch.lower():
            raise ConfigError(
                f"The expert buffer {self.root} holds {self.recipe.arch!r} experts, not "
                f"{arch!r}; use arch={self.recipe.arch} or train experts for {arch}."
            )
        if width is not None and takes_width(self.recipe.arch) and width != self.recipe.width:
            raise ConfigError(
                f"The expert buffer {self.root} holds {self.recipe.arch} networks of width "
                f"{self.recipe.width}, not {width}; pass width={self.recipe.width} or train "
                f"experts of width {width} (`datadistill experts --width {width}`)."
            )

    def network(self, generator: torch.Generator | None = None) -> nn.Module:
        """A network of the experts' architecture (its values are replaced by epochs)."""
        g = generator or torch.Generator().manual_seed(0)
        net = create_model_for(self.recipe.arch, self.info, self.recipe.width, g)
        if _layout(net) != self.manifest["layout"]:
            raise DataError(
                f"The expert buffer {self.root} does not fit this version's "
                f"{self.recipe.arch}; retrain it."
            )
        return net

    def epoch(self, expert: int, epoch: int) -> Tensor:
        """Flat parameters of ``expert`` after ``epoch`` epochs (0: initialisation)."""
        if not 0 <= epoch <= self.epochs:
            raise ConfigError(f"Epoch {epoch} is outside the experts' 0..{self.epochs}.")
        path = self.files[expert]
        try:
            with safe_open(str(path), "pt") as f:
                return f.get_slice("trajectory")[epoch : epoch + 1].reshape(-1)
        except Exception as exc:  # truncated or corrupt file
            raise DataError(f"Cannot read expert {path}: {exc}.") from None

    def network_at(self, expert: int, epoch: int, device: torch.device | None = None) -> nn.Module:
        """``expert``'s network after ``epoch`` epochs, its parameters loaded, in eval mode."""
        if not 0 <= expert < len(self):
            raise ConfigError(
                f"Expert {expert} is not in {self.root}, which holds experts 0..{len(self) - 1}."
            )
        net = self.network()
        torch.nn.utils.vector_to_parameters(self.epoch(expert, epoch), net.parameters())
        return net.to(device or torch.device("cpu")).eval()

    def val_accs(self) -> list[float]:
        return [float(_finished_metadata(path).get("val_acc", math.nan)) for path in self.files]


def open_buffer(
    path: str,
    real: RealData,
    needs: str,
    arch: str | None = None,
    width: int | None = None,
) -> ExpertBuffer:
    """The expert buffer a method reads, checked before a run writes anything: it exists,
    was trained on ``real`` (with ``arch`` / ``width``: of that network) and its parameters
    fit this version's network. ``needs`` opens the error for a missing ``path`` ("MTT
    needs an expert buffer", ...)."""
    if not path:
        raise ConfigError(
            f"{needs}: train one with `datadistill experts` and pass --hp buffer=FOLDER."
        )
    buffer = ExpertBuffer(path)
    buffer.check(real, arch, width)
    buffer.network()  # raises if the stored layout is another version's network
    return buffer


def buffer_manifest(buffer: ExpertBuffer) -> dict[str, Any]:
    """What an artefact distilled from ``buffer`` records of it: the experts' recipe (a
    learned lr, say, was learned for their network), the experts the run drew from, and
    the buffer's absolute path (the ``buffer`` hyperparameter is kept as it was given)."""
    return {
        "expert_recipe": dataclasses.asdict(buffer.recipe),
        "experts": buffer.names(),
        "expert_buffer": str(buffer.root.resolve()),
    }
