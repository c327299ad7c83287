"""User data: imagefolder:PATH and npz:PATH."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datadistill.data import load_dataset
from datadistill.errors import DataError
from tests.data.fabricate import pixels, write_png

# ---------------------------------------------------------------- imagefolder


def _folder(root, classes=("cat", "dog", "emu"), per_class=5, gray=False, odd_size=False):
    for k, name in enumerate(classes):
        for i in range(per_class):
            shape = (12, 10) if gray else (12, 10, 3)
            if odd_size and k == 0 and i == 0:
                shape = (24, 20) if gray else (24, 20, 3)
            write_png(root / name / f"{i}.png", pixels(shape, seed=10 * k + i))
    return root


def test_imagefolder_rgb_with_carved_test_split(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("ignored")
    real = load_dataset(f"imagefolder:{root}", val_size=0, normalization="none")
    assert real.info.class_names == ("cat", "dog", "emu") and real.info.channels == 3
    assert real.info.image_size == (12, 10) and real.info.allow_flip is True
    assert len(real.train_y) == 12 and real.class_counts("test") == [1, 1, 1]
    again = load_dataset(f"imagefolder:{root}", val_size=0, normalization="none")
    assert real.train_x.equal(again.train_x)


def test_imagefolder_gray_resizes_to_most_common_size(tmp_path):
    root = _folder(tmp_path / "imgs", gray=True, odd_size=True)
    with pytest.warns(UserWarning, match=r"1 of 15 images .* not 10x12 pixels"):
        real = load_dataset(f"imagefolder:{root}", val_size=0)
    assert real.info.channels == 1 and real.train_x.shape[1:] == (1, 12, 10)


def test_imagefolder_train_test_layout(tmp_path):
    _folder(tmp_path / "imgs" / "train", per_class=4)
    _folder(tmp_path / "imgs" / "test", per_class=2)
    real = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", val_size=0)
    assert len(real.train_y) == 12 and len(real.test_y) == 6


@pytest.mark.parametrize("splits", [("train", "val"), ("Train", "Val"), ("training", "test")])
def test_imagefolder_split_folders_are_not_read_as_classes(tmp_path, splits):
    """train/ + val/ (or other spellings of the splits) holding class folders would
    otherwise be read as two classes named after the splits."""
    for split in splits:
        _folder(tmp_path / "imgs" / split, per_class=2)
    with pytest.raises(DataError, match="holds split folders") as err:
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}", val_size=0)
    assert "named 'train' and 'test'" in str(err.value)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    root = _folder(tmp_path / "imgs")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images") as err:
        load_dataset(f"imagefolder:{root}")
    assert str(root / "empty") in str(err.value)
    (root / "empty" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"imagefolder:{root}")


def test_imagefolder_damaged_headers_and_chunks_name_the_file(tmp_path):
    """Pillow raises ValueError or SyntaxError, not OSError, for some damaged files: a PPM
    header with a bad size, a PNG chunk after the image data that is garbage."""
    root = _folder(tmp_path / "ppm")
    (root / "cat" / "bad.ppm").write_bytes(b"P6\n8 x8\n255\n")
    with pytest.raises(DataError, match="bad.ppm"):
        load_dataset(f"imagefolder:{root}")
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    root = _folder(tmp_path / "png")
    stream = zlib.compress(b"".join(b"\x00" + b"\x80" * 8 for _ in range(8)))  # 8x8 grey
    head = chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    # the image data split after 5 bytes, then a chunk header that is garbage
    png = (
        b"\x89PNG\r\n\x1a\n"
        + head
        + chunk(b"IDAT", stream[:5])
        + b"\x00\x00\x00\x10\x01\x02\x03\x04"
    )
    (root / "dog" / "split.png").write_bytes(png + stream[5:] + b"\x00" * 20)
    with pytest.raises(DataError, match="split.png"):
        load_dataset(f"imagefolder:{root}")


@pytest.mark.parametrize("label", [2**63, 10**12, 15])
def test_imagefolder_labels_json_beyond_its_classes_is_refused(tmp_path, label):
    """An export's labels.json with a label past its classes and images (one wider than
    int64, or one that would make a trillion classes) is one error, before any array."""
    import json

    root = _folder(tmp_path / "imgs", per_class=2)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    rows = [{"file": f, "label": i % 3} for i, f in enumerate(files)]
    rows[0]["label"] = label
    meta = {"class_names": ["cat", "dog", "emu"], "allow_flip": True, "files": rows}
    (root / "labels.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=f"gives label {label} to 6 images of 3 classes"):
        load_dataset(f"imagefolder:{root}")


# ---------------------------------------------------------------- npz


def _labels(n, k=4):
    return np.arange(n) % k


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((40, 9, 7), (1, 9, 7)), ((40, 9, 7, 3), (3, 9, 7)), ((40, 3, 9, 7), (3, 9, 7)),
     ((40, 9, 7, 1), (1, 9, 7))],
)  # fmt: skip
def test_npz_layouts(tmp_path, shape, expected):
    path = tmp_path / "set.npz"
    np.savez(path, x=pixels(shape), y=_labels(40))
    real = load_dataset(f"npz:{path}", val_size=0)
    assert tuple(real.train_x.shape[1:]) == expected
    assert len(real.train_y) == 32 and real.class_counts("test") == [2, 2, 2, 2]
    assert real.info.allow_flip is True and real.info.class_names == ("0", "1", "2", "3")


def test_npz_float_pixels_test_arrays_and_names(tmp_path):
    path = tmp_path / "set.npz"
    x = pixels((20, 1, 5, 5)).astype(np.float32) / 255
    names = np.array(["a", "b", "c", "d"])
    np.savez(path, images=x, labels=_labels(20), x_test=x[:8], y_test=_labels(8), class_names=names)
    real = load_dataset(f"npz:{path}", val_size=0, normalization="none")
    assert np.allclose(real.train_x.numpy(), x) and len(real.test_y) == 8
    assert real.info.class_names == ("a", "b", "c", "d")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [({"x": pixels((10, 5, 5)), "y": _labels(9)}, "10 images but 9 labels"),
     ({"x": pixels((10, 5, 5)), "y": _labels(10).astype(float)}, "integer class indices"),
     ({"x": pixels((10, 25)), "y": _labels(10)}, "expected"),
     ({"x": pixels((10, 5, 5, 5)), "y": _labels(10)}, "channels"),
     ({"x": pixels((10, 5, 5)) * 2.0, "y": _labels(10)}, r"outside \[0, 1\]"),
     ({"images": pixels((10, 5, 5))}, "labels under"),
     ({"x": pixels((10, 5, 5)), "y": _labels(10), "x_test": pixels((2, 5, 5))}, "both"),
     ({"x": pixels((10, 5, 5)), "y": _labels(10) * 2}, "no training images")],
)  # fmt: skip
def test_npz_bad_content_names_the_file(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value)


def test_npz_missing_corrupt_and_pickled(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK not really")
    with pytest.raises(DataError, match="bad.npz"):
        load_dataset(f"npz:{bad}")
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([object(), object()], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="cannot be read without pickle or is damaged"):
        load_dataset(f"npz:{objects}")
    with pytest.raises(DataError, match="Give a path"):
        load_dataset("npz:")
    text = tmp_path / "notes.npz"
    text.write_text("a plain text file")
    with pytest.raises(DataError, match="notes.npz is not an .npz file"):
        load_dataset(f"npz:{text}")
    with pytest.raises(DataError, match="is a folder; 'npz:' takes an .npz file"):
        load_dataset(f"npz:{tmp_path}")
    with pytest.raises(DataError, match="is a file; 'imagefolder:' takes a folder"):
        load_dataset(f"imagefolder:{text}")


# ---------------------------------------------------------------- too few classes or images


def test_one_class_is_refused_for_npz_and_imagefolder(tmp_path):
    from datadistill.errors import ConfigError

    path = tmp_path / "one.npz"
    np.savez(path, x=pixels((20, 9, 7)), y=np.zeros(20, dtype=np.int64))
    with pytest.raises(ConfigError, match="has 1 class; distillation needs at least 2"):
        load_dataset(f"npz:{path}", val_size=0)
    root = _folder(tmp_path / "imgs", classes=("cat",))
    with pytest.raises(ConfigError, match="has 1 class; distillation needs at least 2"):
        load_dataset(f"imagefolder:{root}", val_size=0)


def test_a_class_left_without_training_images_names_the_cause(tmp_path):
    from datadistill.errors import ConfigError

    path = tmp_path / "set.npz"
    np.savez(path, x=pixels((40, 9, 7)), y=_labels(40))
    with pytest.raises(ConfigError, match="--max-train 2 is too small for its 4 classes"):
        load_dataset(f"npz:{path}", val_size=0, max_train=2)


@pytest.mark.parametrize(
    ("dtype", "names", "match"),
    [
        # a -1 stored as uint32 would otherwise ask for four billion (empty) classes
        (np.uint32, None, "has label 4294967295 but only 40 images"),
        (np.uint32, list("abcd"), "has label 4294967295 but 4 class_names"),
        (np.uint64, None, "has label 18446744073709551615"),  # would wrap to -1 in int64
    ],
)
def test_npz_labels_out_of_range_are_refused(tmp_path, dtype, names, match):
    y = _labels(40).astype(dtype)
    y[3] = np.iinfo(dtype).max
    extra = {} if names is None else {"class_names": np.array(names)}
    np.savez(tmp_path / "set.npz", x=pixels((40, 9, 7)), y=y, **extra)
    with pytest.raises(DataError, match=match):
        load_dataset(f"npz:{tmp_path / 'set.npz'}", val_size=0)


def test_npz_allow_flip(tmp_path):
    x = np.zeros((20, 8, 8), dtype=np.uint8)
    y = np.arange(20) % 2
    np.savez(tmp_path / "a.npz", x=x, y=y, allow_flip=np.bool_(False))
    assert load_dataset(f"npz:{tmp_path / 'a.npz'}", val_size=0).info.allow_flip is False
    np.savez(tmp_path / "b.npz", x=x, y=y)
    assert load_dataset(f"npz:{tmp_path / 'b.npz'}", val_size=0).info.allow_flip is True
    np.savez(tmp_path / "c.npz", x=x, y=y, allow_flip=np.array([1, 0]))
    with pytest.raises(DataError, match="'allow_flip' that is not a boolean scalar"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}", val_size=0)


def test_npz_damaged_members_are_one_error(tmp_path):
    """A corrupt compressed member and a zip member that is not an .npy file each name
    the file."""
    import zipfile

    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=pixels((20, 8, 8), 0), y=np.arange(20) % 2)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 10, start + 60):  # scramble the deflate stream of x.npy
        data[i] ^= 0x5A
    broken = tmp_path / "broken.npz"
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match="broken.npz"):
        load_dataset(f"npz:{broken}")
    extra = tmp_path / "extra.npz"
    with zipfile.ZipFile(extra, "w") as z:
        z.writestr("x.npy", _npy_bytes(pixels((20, 8, 8), 0)))
        z.writestr("y.npy", _npy_bytes(np.arange(20) % 2))
        z.writestr("notes.txt", "not an array")
    with pytest.raises(DataError, match="'notes.txt', which is not a numpy array"):
        load_dataset(f"npz:{extra}")


def test_npz_unreadable_containers_and_empty_arrays_are_one_error(tmp_path):
    """What the zip and .npy readers raise beyond OSError / ValueError (an encrypted member,
    an unknown compression, an array too large for memory), no images, and images without
    pixels: each one error naming the file."""
    import zipfile

    good = tmp_path / "good.npz"
    np.savez(good, x=pixels((20, 8, 8), 0), y=np.arange(20) % 2)
    for name, at, value in [("encrypted", 6, 0x01), ("deflate64", 8, 9)]:
        data = bytearray(good.read_bytes())
        # every member's local header (flags at 6, method at 8) and central directory
        # entry (the same fields 2 bytes later)
        for signature, shift in ((b"PK\x03\x04", 0), (b"PK\x01\x02", 2)):
            start = data.find(signature)
            while start >= 0:
                data[start + at + shift] = value
                start = data.find(signature, start + 4)
        path = tmp_path / f"{name}.npz"
        path.write_bytes(bytes(data))
        with pytest.raises(DataError, match=f"{name}.npz cannot be read as an .npz file"):
            load_dataset(f"npz:{path}")
    huge = tmp_path / "huge.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.uint8))
    header["shape"] = (10**15,)
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(huge, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\x00" * 64)
        z.writestr("y.npy", _npy_bytes(np.arange(20) % 2))
    with pytest.raises(DataError, match="too large for this machine's memory"):
        load_dataset(f"npz:{huge}")
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="empty.npz holds no images"):
        load_dataset(f"npz:{empty}")
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((20, 0, 5), np.uint8), y=np.arange(20) % 2)
    with pytest.raises(DataError, match="are 0x5 pixels"):
        load_dataset(f"npz:{flat}")


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_imagefolder_scales_16_bit_grayscale(tmp_path):
    from PIL import Image

    for c in range(2):
        for i in range(6):
            a = np.full((8, 8), 257 * (40 * c + i), dtype=np.uint16)
            a[0, 0] = 65535
            path = tmp_path / "f" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(path)
    real = load_dataset(f"imagefolder:{tmp_path / 'f'}", val_size=0, normalization="none")
    x = torch.cat([real.train_x, real.test_x])
    assert x.shape[1] == 1
    assert float(x[:, 0, 0, 0].min()) == pytest.approx(1.0)  # 65535 -> 255 -> 1.0
    values = sorted({round(float(v) * 255) for v in x[:, 0, 1, 1]})
    assert values == [0, 1, 2, 3, 4, 5, 40, 41, 42, 43, 44, 45]  # x / 257, not clipped
