import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

import datadistill as dd
from datadistill.errors import ConfigError, DataError


def _distilled(digits, soft=False, lr=None):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(20, 1, 8, 8, generator=g)
    labels = torch.arange(10).repeat_interleave(2)
    return dd.Distilled(
        images=images,
        labels=labels,
        info=digits.info,
        soft_labels=torch.randn(20, 10, generator=g) if soft else None,
        lr=lr,
        manifest={"method": "dm", "hparams": {"lr_img": 1.0}, "seed": 3},
    )


@pytest.mark.parametrize("soft,lr", [(False, None), (True, 0.01)])
def test_round_trip(tmp_path, digits, soft, lr):
    d = _distilled(digits, soft, lr)
    path = d.save(tmp_path / "x.safetensors")
    back = dd.load(path)
    assert torch.equal(back.images, d.images) and torch.equal(back.labels, d.labels)
    assert back.info == d.info
    assert back.ipc == 2
    if soft:
        assert torch.equal(back.soft_labels, d.soft_labels)
    else:
        assert back.soft_labels is None
    assert back.lr == pytest.approx(lr) if lr else back.lr is None
    assert back.manifest["method"] == "dm" and back.manifest["seed"] == 3
    assert back.manifest["format_version"] == 1
    assert back.manifest["package_version"] == dd.__version__
    # the manifest is plain JSON in the safetensors header: no pickle anywhere
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["manifest"])["dataset"]["name"] == "digits"
    assert len(back.as_dataset()) == 20
    assert len(back.as_dataset()[0]) == (3 if soft else 2)
    # a run folder stands for the artefact inside it
    d.save(tmp_path / "run" / "distilled.safetensors")
    assert torch.equal(dd.load(tmp_path / "run").images, d.images)


def test_pixels_undo_normalisation(digits):
    pixels = digits.denormalize(digits.train_x[:20])
    d = dd.Distilled(images=digits.train_x[:20], labels=digits.train_y[:20], info=digits.info)
    assert torch.allclose(d.pixels(), pixels, atol=1e-5)


def test_export_png_and_npz(tmp_path, digits):
    d = _distilled(digits)
    out = dd.export(d, tmp_path / "png", "png")
    files = sorted(out.rglob("*.png"))
    assert len(files) == 20 and len({f.parent for f in files}) == 10
    index = json.loads((out / "labels.json").read_text())
    assert index["class_names"] == list(digits.info.class_names) and index["lr"] is None
    assert all((out / row["file"]).is_file() for row in index["files"])
    assert [row["label"] for row in index["files"]] == d.labels.tolist()
    npz = dd.export(d, tmp_path / "set.npz", "npz")
    arr = np.load(npz)
    assert arr["x"].shape == (20, 8, 8, 1) and arr["x"].dtype == np.uint8
    assert list(arr["y"]) == d.labels.tolist()
    assert list(arr["class_names"]) == list(digits.info.class_names)
    assert "soft_labels" not in arr and "lr" not in arr
    # an existing file is kept, and a name with a dot gains the suffix rather than losing
    # its last part
    with pytest.raises(ConfigError, match="already exists"):
        dd.export(d, tmp_path / "set.npz", "npz")
    assert dd.export(d, tmp_path / "set.v1", "npz") == tmp_path / "set.v1.npz"
    with pytest.raises(ConfigError, match="already exists"):
        dd.export(d, tmp_path / "set.v1", "npz")
    # a PNG export over an existing file says it is a file, not a folder
    with pytest.raises(ConfigError, match="already exists and is a file"):
        dd.export(d, tmp_path / "set.npz", "png")


def test_export_keeps_soft_labels_and_lr(tmp_path, digits):
    d = _distilled(digits, soft=True, lr=0.02)
    arr = np.load(dd.export(d, tmp_path / "set.npz", "npz"))
    assert np.allclose(arr["soft_labels"], d.soft_labels.numpy())
    assert float(arr["lr"]) == pytest.approx(0.02)
    index = json.loads((dd.export(d, tmp_path / "png", "png") / "labels.json").read_text())
    assert index["lr"] == pytest.approx(0.02)
    assert np.allclose([row["soft_label"] for row in index["files"]], d.soft_labels.numpy())


def test_manifest_records_the_file_size(tmp_path, digits):
    for d in (_distilled(digits), _distilled(digits, soft=True, lr=0.1)):
        path = d.save(tmp_path / "x.safetensors")
        assert dd.load(path).manifest["artefact_bytes"] == path.stat().st_size


def test_the_manifest_describes_the_set_in_memory_as_in_the_file(tmp_path, digits):
    """What the manifest says of the set itself (dataset, IPC, sizes, factor) is there
    before saving too, kept true by every copy; the file's own entries come with it."""
    d = _distilled(digits)
    described = ("dataset", "ipc", "num_images", "factor", "num_training_images")
    assert d.manifest["ipc"] == 2 and d.manifest["num_training_images"] == 20
    assert d.manifest["dataset"] == digits.info.to_dict() and d.manifest["seed"] == 3
    assert "format_version" not in d.manifest and "artefact_bytes" not in d.manifest
    back = dd.load(d.save(tmp_path / "x.safetensors"))
    assert {k: back.manifest[k] for k in described} == {k: d.manifest[k] for k in described}
    assert back.manifest["format_version"] == 1
    smaller = dataclasses.replace(d, images=d.images[:10], labels=d.labels[:10])
    assert smaller.manifest["ipc"] == 1 and smaller.manifest["num_images"] == 10
    assert d.with_manifest(note="x").manifest["ipc"] == 2
    assert d.with_manifest(ipc=5).manifest["ipc"] == 2  # the set's own, not a claim
    with pytest.raises(DataError, match="manifest must be a dict"):
        dataclasses.replace(d, manifest=None)


def test_load_says_a_checkpoint_is_not_a_set(tmp_path):
    torch.save({"step": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match="is a torch file .* not a distilled set; give the run"):
        dd.load(tmp_path / "checkpoint.pt")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="is an .npz file, not a distilled set; as data it"):
        dd.load(tmp_path / "x.npz")


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="No distilled set"):
        dd.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DataError, match="bad.safetensors"):
        dd.load(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(DataError, match="not a datadistill artefact"):
        dd.load(other)


def test_a_manifest_without_a_dataset_field_names_the_file(tmp_path, digits):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = _distilled(digits).save(tmp_path / "set.safetensors")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        manifest = json.loads(f.metadata()["manifest"])
    del manifest["dataset"]["num_classes"]
    save_file(tensors, str(path), metadata={"manifest": json.dumps(manifest)})
    with pytest.raises(DataError, match=r"set.safetensors has a damaged manifest.*num_classes"):
        dd.load(path)


def _rewritten(path, tensors=None, dataset=None, **manifest_entries):
    """The artefact at ``path`` saved again with some tensors and manifest entries changed
    (a tensor given as None is dropped), as a damaged or hand-edited file would be."""
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        held = {k: f.get_tensor(k) for k in f.keys()}
        manifest = json.loads(f.metadata()["manifest"])
    held.update(tensors or {})
    manifest["dataset"].update(dataset or {})
    manifest.update(manifest_entries)
    out = path.with_name("edited.safetensors")
    kept = {k: v.contiguous() for k, v in held.items() if v is not None}
    save_file(kept, str(out), metadata={"manifest": json.dumps(manifest)})
    return out


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dataset": {"num_classes": 10**12}}, r"10 class names for 1000000000000 classes"),
        ({"dataset": {"num_classes": 0}}, r"0 classes of 1-channel 8x8"),
        ({"dataset": {"mean": [0.1, 0.2]}}, r"2 means and 1 stds for 1 channels"),
        ({"dataset": {"std": [0.0]}}, r"stds above 0"),
        ({"tensors": {"images": torch.zeros(20, 1, 8, 8, dtype=torch.uint8)}}, r"uint8, not float"),
        ({"tensors": {"labels": torch.zeros(20, dtype=torch.bool)}}, r"bool, not integers"),
        ({"tensors": {"soft_labels": torch.zeros(20, 10, dtype=torch.long)}}, r"soft labels are"),
        ({"tensors": {"images": torch.full((20, 1, 8, 8), float("nan"))}}, r"its images is finite"),
        ({"tensors": {"lr": torch.tensor([0.01, 0.02])}}, r"its lr is \(2,\)"),
        (
            {"tensors": {"images": torch.zeros(0, 1, 8, 8), "labels": torch.zeros(0).long()}},
            r"holds no images",
        ),
    ],
)
def test_load_refuses_a_damaged_or_hand_edited_set(tmp_path, digits, change, match):
    """A shared set is read with one error for what would otherwise crash a command, fill
    memory (a trillion class folders in a PNG export) or give a silent 10% (NaN pixels)."""
    path = _distilled(digits).save(tmp_path / "set.safetensors")
    with pytest.raises(DataError, match=match):
        dd.load(_rewritten(path, **change))


def test_save_refuses_what_load_would(tmp_path, digits):
    d = _distilled(digits, soft=True)
    nan = dataclasses.replace(d, soft_labels=torch.full_like(d.soft_labels, float("nan")))
    with pytest.raises(DataError, match="cannot be saved: not every value of its soft labels"):
        nan.save(tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


def test_load_reads_other_float_and_integer_dtypes_as_the_sets_own(tmp_path, digits):
    d = _distilled(digits, soft=True)
    path = d.save(tmp_path / "set.safetensors")
    tensors = {
        "images": d.images.double(),
        "labels": d.labels.int(),
        "soft_labels": d.soft_labels.half(),
    }
    read = dd.load(_rewritten(path, tensors=tensors))
    assert read.images.dtype == torch.float32 and read.labels.dtype == torch.int64
    assert read.soft_labels.dtype == torch.float32
    assert torch.equal(read.images, d.images) and torch.equal(read.labels, d.labels)


def test_exports_read_back_as_user_data(tmp_path, digits):
    """An npz export loads as ``npz:PATH`` and a PNG export as ``imagefolder:PATH``."""
    idx = torch.cat([torch.nonzero(digits.train_y == c)[:6, 0] for c in range(10)])
    d = dd.Distilled(images=digits.train_x[idx], labels=digits.train_y[idx], info=digits.info)
    expected = sorted((d.pixels() * 255).round().flatten(1).tolist())
    for spec in (
        f"npz:{dd.export(d, tmp_path / 'set.npz', 'npz')}",
        f"imagefolder:{dd.export(d, tmp_path / 'png', 'png')}",
    ):
        real = dd.load_dataset(spec, val_size=0, normalization="none")
        assert real.info.class_names == digits.info.class_names
        assert real.info.allow_flip is False  # digits are never flipped, and exports say so
        x = torch.cat([real.train_x, real.test_x])  # the loaders carve a test split
        assert sorted((x * 255).round().flatten(1).tolist()) == expected, spec


def test_png_export_reads_back_with_its_own_class_order(tmp_path, digits):
    """Class names that sort otherwise than their labels (as Fashion-MNIST's) keep their
    labels through a PNG export: the loader follows labels.json, not the folder order."""
    import dataclasses
    import json

    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    info = dataclasses.replace(digits.info, class_names=names)
    idx = torch.cat([torch.nonzero(digits.train_y == c)[:5, 0] for c in range(10)])
    d = dd.Distilled(images=digits.train_x[idx], labels=digits.train_y[idx], info=info)
    out = dd.export(d, tmp_path / "png", "png")
    real = dd.load_dataset(f"imagefolder:{out}", val_size=0, normalization="none")
    assert real.info.class_names == names
    x = torch.cat([real.train_x, real.test_x])
    y = torch.cat([real.train_y, real.test_y])
    pairs = sorted(zip(((x * 255).round().flatten(1).tolist()), y.tolist(), strict=True))
    want = (d.pixels() * 255).round().flatten(1).tolist()
    assert pairs == sorted(zip(want, d.labels.tolist(), strict=True))
    meta = json.loads((out / "labels.json").read_text())
    meta["files"] = meta["files"][1:]  # an image the file does not label
    (out / "labels.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="lists no label for"):
        dd.load_dataset(f"imagefolder:{out}", val_size=0)
    (out / "labels.json").write_text('{"something": "else"}')  # a user's own file
    assert dd.load_dataset(f"imagefolder:{out}", val_size=0).info.class_names != names


def test_grid_follows_labels_and_allows_fewer_images_than_classes(tmp_path, digits):
    import dataclasses

    import numpy as np
    from PIL import Image

    from datadistill.report import save_grid

    def grid(images, labels, name):
        d = dd.Distilled(images=images, labels=labels, info=digits.info, manifest={})
        return np.asarray(Image.open(save_grid(d, tmp_path / name)))

    # each class's images one grey level of its own, two images a class
    labels = torch.arange(10).repeat_interleave(2)
    images = (labels / 10).view(20, 1, 1, 1).expand(20, 1, 8, 8).clone()
    sorted_grid = grid(images, labels, "sorted.png")
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    # the same rows whatever order the set stores its images in ...
    assert np.array_equal(grid(images[order], labels[order], "shuffled.png"), sorted_grid)
    # ... and each row shows its own class's images: swapping two classes' images shows
    swapped = images.clone()
    swapped[[0, 1, 18, 19]] = images[[18, 19, 0, 1]]
    assert not np.array_equal(grid(swapped, labels, "swapped.png"), sorted_grid)
    d = _distilled(digits)
    few = dataclasses.replace(d, images=d.images[:5], labels=torch.tensor([0, 0, 3, 7, 7]))
    assert save_grid(few, tmp_path / "b.png").is_file()


@pytest.mark.parametrize("classes", [10, 30, 120])
def test_grid_of_many_classes_wraps_into_blocks(tmp_path, digits, classes):
    """Ten classes keep one column of rows; thirty wrap into side-by-side blocks (a grid
    wider than tall, not a strip thirty rows high); past a hundred only the first hundred
    are drawn."""
    import dataclasses

    from PIL import Image

    from datadistill.report import grid_blocks, save_grid

    info = dataclasses.replace(
        digits.info, num_classes=classes, class_names=[f"c{i}" for i in range(classes)]
    )
    d = dd.Distilled(
        images=torch.rand(classes, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
        labels=torch.arange(classes),
        info=info,
        manifest={},
    )
    width, height = Image.open(save_grid(d, tmp_path / "g.png")).size
    assert grid_blocks(min(classes, 100), 1) == {10: 1, 30: 5, 120: 10}[classes]
    assert (width > height) == (classes > 10)
    assert grid_blocks(100, 10) == 3 and grid_blocks(20, 10) == 1


def test_figures_leave_the_process_matplotlib_backend_alone(tmp_path, digits):
    """A notebook's inline backend survives a run's grid.png and curves.png."""
    import matplotlib

    from datadistill.report import save_curves, save_grid

    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        save_grid(_distilled(digits), tmp_path / "grid.png")
        save_curves(_distilled(digits), tmp_path / "curves.png")
        assert matplotlib.get_backend() == "pdf"
        assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.use(before)


def test_png_export_folder_names_are_safe_and_distinct(tmp_path, digits):
    import dataclasses

    names = ("..", "a b", "a_b", ".hidden", "A_B", "x", "y", "z", "w", "v")
    info = dataclasses.replace(digits.info, class_names=names)
    d = dataclasses.replace(_distilled(digits), info=info)
    out = dd.export(d, tmp_path / "png", "png")
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(["class0", "a_b", "a_b_2", "hidden", "A_B_3", "x", "y", "z", "w", "v"])
    assert not (tmp_path / "00000.png").exists()  # nothing written above the export
    with pytest.raises(ConfigError, match="give the npz export a file name"):
        dd.export(d, tmp_path, "npz")


def test_load_checks_version_first_and_whitening_tensors(tmp_path, digits):
    from safetensors.torch import load_file, save_file

    path = _distilled(digits).save(tmp_path / "a.safetensors")
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        manifest = json.loads(f.metadata()["manifest"])
    newer = {**manifest, "format_version": 99, "dataset": {"changed": True}}
    save_file(tensors, str(tmp_path / "newer.safetensors"), {"manifest": json.dumps(newer)})
    with pytest.raises(DataError, match="upgrade the package"):
        dd.load(tmp_path / "newer.safetensors")
    half = {**tensors, "zca_mean": torch.zeros(64)}
    save_file(half, str(tmp_path / "half.safetensors"), {"manifest": json.dumps(manifest)})
    with pytest.raises(DataError, match="not whitened but it holds 1 of the 2 whitening"):
        dd.load(tmp_path / "half.safetensors")


def test_a_whitened_set_stores_the_inverse_only_and_reads_older_files(tmp_path):
    """The ZCA of a whitened set is the upper triangle of its symmetric inverse and its
    mean (format 4): formats 1-3 held the whitening matrix and the whole inverse, 76 MB for
    CIFAR-10's 3072 x 3072. Un-whitened pixels are the same after the round trip; the
    matrix, computed from the inverse, matches the fitted one; a format-1 file that holds
    the matrix and the whole inverse still loads."""
    from safetensors.torch import load_file, save_file

    real = dd.load_dataset("digits", zca=True)
    d = dd.distill(real, "random", 2, device="cpu")
    path = d.save(tmp_path / "z.safetensors")
    tensors = load_file(str(path))
    assert set(tensors) == {"images", "labels", "zca_inverse", "zca_mean"}
    back = dd.load(path)
    assert back.manifest["format_version"] == 4
    assert torch.equal(back.pixels(), d.pixels())
    assert torch.allclose(back.zca.matrix, real.zca.matrix, atol=1e-4)
    assert tensors["zca_inverse"].shape == (64 * 65 // 2,)  # one triangle of 64 x 64
    assert torch.equal(back.zca.inverse, real.zca.inverse)
    assert path.stat().st_size < tensors["images"].numel() * 4 + 64 * 65 // 2 * 4 + 4096
    with safe_open(str(path), "pt") as f:
        manifest = json.loads(f.metadata()["manifest"])
    old = {
        **tensors,
        "zca_matrix": real.zca.matrix.contiguous(),
        "zca_inverse": real.zca.inverse.contiguous(),
    }
    manifest = {**manifest, "format_version": 1}
    save_file(old, str(tmp_path / "old.safetensors"), {"manifest": json.dumps(manifest)})
    legacy = dd.load(tmp_path / "old.safetensors")
    assert torch.equal(legacy.zca.matrix, real.zca.matrix)
    assert torch.equal(legacy.zca.inverse, real.zca.inverse)
    assert torch.equal(legacy.pixels(), d.pixels())
    # damaged whitening tensors: one sentence naming the file
    for name, bad in {
        "short": {**tensors, "zca_inverse": tensors["zca_inverse"][:-1]},
        "mean": {**tensors, "zca_mean": torch.zeros(10)},
        "missing": {k: v for k, v in tensors.items() if k != "zca_mean"},
    }.items():
        save_file(bad, str(tmp_path / f"{name}.safetensors"), {"manifest": json.dumps(manifest)})
        with pytest.raises(DataError, match=f"{name}.safetensors is inconsistent"):
            dd.load(tmp_path / f"{name}.safetensors")


def test_a_whitened_multi_formation_set_relabelled_is_format_4(tmp_path):
    """Format 4 carries formats 2 and 3 (a factor, a teacher): readers key on the manifest."""
    from datadistill.experts import ExpertRecipe, train_experts
    from tests.conftest import EXPERT_RECIPE

    real = dd.load_dataset("digits", zca=True)
    recipe = ExpertRecipe(**{**EXPERT_RECIPE, "epochs": 1})
    train_experts(real, tmp_path / "zbuf", 1, recipe, device="cpu", log=lambda m: None)
    d = dd.distill(real, "random", 1, device="cpu", factor=2)
    r = dd.relabel(d, real, tmp_path / "zbuf")
    back = dd.load(r.save(tmp_path / "r.safetensors"))
    assert back.manifest["format_version"] == 4 and back.factor == 2
    assert back.soft_labels is not None and back.soft_labels.shape == (40, 10)
    assert torch.equal(back.pixels(), r.pixels())


def test_an_image_folder_takes_a_user_labels_json_for_what_it_is(tmp_path, digits):
    """A labels.json of another shape is the user's own file; one shaped as an export's
    with a wrong value is one clear error."""
    import json

    idx = torch.cat([torch.nonzero(digits.train_y == c)[:5, 0] for c in range(10)])
    d = dd.Distilled(images=digits.train_x[idx], labels=digits.train_y[idx], info=digits.info)
    out = dd.export(d, tmp_path / "png", "png")
    meta = json.loads((out / "labels.json").read_text())
    for row in meta["files"]:
        row["file"] = "./" + row["file"].replace("/", "\\")  # a hand-edited file
    (out / "labels.json").write_text(json.dumps(meta))
    assert dd.load_dataset(f"imagefolder:{out}", val_size=0).info.allow_flip is False
    meta["allow_flip"] = "false"
    (out / "labels.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="allow_flip='false' is not"):
        dd.load_dataset(f"imagefolder:{out}", val_size=0)
    (out / "labels.json").write_text(json.dumps({"class_names": ["a"], "files": ["x.png"]}))
    assert dd.load_dataset(f"imagefolder:{out}", val_size=0).info.allow_flip is True
    # a damaged one (cut short) is read past, but not silently
    (out / "labels.json").write_text(json.dumps(meta)[:40])
    with pytest.warns(UserWarning, match="labels.json cannot be read.*labelled by their folders"):
        assert dd.load_dataset(f"imagefolder:{out}", val_size=0).info.allow_flip is True


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_artefacts_and_npz_exports_get_the_umask_mode_not_owner_only(tmp_path, digits):
    """safetensors writes owner-only files; a shared artefact is readable as any new file."""
    import stat

    old = os.umask(0o022)
    try:
        d = _distilled(digits)
        for path in (d.save(tmp_path / "set.safetensors"), dd.export(d, tmp_path / "x", "npz")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    finally:
        os.umask(old)


@pytest.mark.parametrize("path", [5, None, 1.5])
def test_load_takes_a_path(path):
    with pytest.raises(ConfigError, match="path"):
        dd.load(path)


def test_a_distilled_sets_lr_is_a_number(digits):
    d = dd.distill(digits, "random", 1, device="cpu")
    with pytest.raises(DataError, match="lr"):
        dd.Distilled(d.images, d.labels, d.info, lr="x")  # type: ignore[arg-type]
    assert dd.Distilled(d.images, d.labels, d.info, lr=np.float32(0.02)).lr == np.float32(0.02)
