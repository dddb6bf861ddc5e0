"""Dataset pipelines on fake data written in the real on-disk formats (no download)."""
import os
import pickle

import numpy as np
import pytest
import torch

from tks import data
from tks.data import DatasetNotFoundError, build_datasets, split_per_class


# ---------------------------------------------------------------------------------------------- digits

def test_digits_bundled_split_and_values():
    train, test, info = build_datasets("digits", T=4)
    assert (len(train), len(test)) == (1437, 360)  # 1797 = sklearn's digits, 80/20 stratified
    assert info.static and (info.num_classes, info.in_channels, info.image_size) == (10, 1, 8)
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    xs = train.tensors[0]
    assert float(xs.min()) == 0.0 and float(xs.max()) == 1.0  # pixel values 0..16 scaled by 1/16
    assert torch.equal(torch.unique(train.tensors[1]), torch.arange(10))
    counts = torch.bincount(test.tensors[1])
    assert counts.min() >= 35 and counts.max() <= 37  # stratified


def test_digits_match_scikit_learn():
    from sklearn.datasets import load_digits  # scikit-learn: a train extra, installed with the tests

    images = load_digits().images
    train, test, _ = build_datasets("digits", T=1)
    ours = torch.cat([train.tensors[0], test.tensors[0]]).squeeze(1).numpy() * 16
    theirs = np.sort(images.reshape(len(images), -1), axis=0)
    np.testing.assert_array_equal(np.sort(ours.reshape(len(ours), -1), axis=0), theirs)


def test_digits_file_is_installed_as_package_data(tmp_path):
    """setup.py's build copies tks/data/digits.npz next to the modules (what pip installs)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, TKS_SKIP_CUDA_BUILD="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = tmp_path / "tks" / "data" / "digits.npz"
    assert built.read_bytes() == open(data.DIGITS_FILE, "rb").read()
    assert (tmp_path / "tks" / "train.py").is_file() and (tmp_path / "tks" / "eval.py").is_file()


# ---------------------------------------------------------------------------------------------- CIFAR

def _write_cifar(root, name, n_train_per_file=3, n_test=4):
    """CIFAR python pickle batches (the torchvision/Krizhevsky on-disk format), tiny."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, key, classes = "cifar-10-batches-py", "labels", 10
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        folder, train_files, test_files, key, classes = "cifar-100-python", ["train"], ["test"], "fine_labels", 100
    os.makedirs(os.path.join(root, folder))
    for files, n in ((train_files, n_train_per_file), (test_files, n_test)):
        for f in files:
            images = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
            images[0] = 0
            images[0, :1024] = 255  # first image: red plane all 255 (row-major R, G, B planes)
            entry = {"data": images, key: rng.integers(0, classes, size=n).tolist(), "batch_label": f}
            with open(os.path.join(root, folder, f), "wb") as fh:
                pickle.dump(entry, fh)
    return folder


@pytest.mark.parametrize("name,n_train", [("cifar10", 15), ("cifar100", 3)])
def test_cifar_reads_python_batches(tmp_path, name, n_train):
    _write_cifar(str(tmp_path), name)
    train, test, info = build_datasets(name, T=2, data_dir=str(tmp_path))
    classes = 10 if name == "cifar10" else 100
    assert (len(train), len(test), info.num_classes, info.static) == (n_train, 4, classes, True)
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    mean, std = data.CIFAR_MEAN_STD[name]
    expected = torch.tensor([(1 - mean[0]) / std[0], (0 - mean[1]) / std[1], (0 - mean[2]) / std[2]])
    torch.testing.assert_close(x.mean((1, 2)), expected)  # channel order kept: red plane is red
    # training items are augmented (random crop with zero padding, flip); evaluation items are not
    torch.manual_seed(0)
    crops = torch.stack([train[0][0] for _ in range(8)])
    assert not all(torch.equal(crops[0], c) for c in crops[1:])
    plain, _, _ = build_datasets(name, T=2, data_dir=str(tmp_path), augment=False)
    torch.testing.assert_close(plain[0][0].mean((1, 2)), expected)  # the first train image, not moved


def test_cifar_missing_folder_says_download(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="--download") as e:
        build_datasets("cifar10", T=4, data_dir=str(tmp_path))
    assert "cifar-10-batches-py" in str(e.value) and "--data-dir" in str(e.value)


# ---------------------------------------------------------------------------------------------- events

def _write_ncaltech_bin(path, x, y, t, p):
    """N-Caltech101 / N-MNIST .bin: 5 bytes per event, x, y, p<<7 | t[22:16], t[15:8], t[7:0]."""
    raw = np.zeros((len(x), 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (np.asarray(p) << 7) | ((np.asarray(t) >> 16) & 127)
    raw[:, 3] = (np.asarray(t) >> 8) & 255
    raw[:, 4] = np.asarray(t) & 255
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw.tofile(path)


def _recording(rng, n=400, size=96, duration=30000, offset=5):
    t = np.sort(rng.integers(0, duration, n))
    t[0], t[-1] = 0, duration  # fixed span: windows of duration // T
    x = rng.integers(0, size, n)
    y = rng.integers(0, size, n)
    x[0], y[0], x[1], y[1] = 0, 0, size - 1, size - 1  # the recording spans exactly size x size
    return x + offset, y + offset, t, rng.integers(0, 2, n)  # offset: tonic crops to the min x, y


def _expected_frames(x, y, t, p, T, size, offset):
    """ToFrame(n_time_bins=T) by hand, then a 2x average pool (= bilinear resize by 1/2)."""
    window = (t[-1] - t[0]) // T
    frames = np.zeros((T, 2, size, size), dtype=np.float32)
    for xi, yi, ti, pi in zip(x - offset, y - offset, t, p):
        b = (ti - t[0]) // window
        if b < T:
            frames[b, pi, yi, xi] += 1
    return torch.from_numpy(frames).view(T, 2, size // 2, 2, size // 2, 2).mean((3, 5))


def test_ncaltech101_bin_files_to_cached_frames(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    root = tmp_path / "NCALTECH101" / "Caltech101"
    recordings = {}
    for c in ("accordion", "airplanes", "anchor"):
        for i in range(10):
            rec = _recording(rng)
            _write_ncaltech_bin(str(root / c / f"image_{i:04d}.bin"), *rec)
            recordings[(c, i)] = rec
    T = 3
    train, test, info = build_datasets("ncaltech101", T=T, data_dir=str(tmp_path), augment=False)
    assert (len(train), len(test)) == (27, 3)  # 90/10 per class
    assert (info.num_classes, info.in_channels, info.image_size, info.static) == (3, 2, 48, False)
    assert sorted(test.targets) == [0, 1, 2]
    frames, label = test[0]
    assert frames.shape == (T, 2, 48, 48) and frames.dtype == torch.float32
    # which file is test[0]: the first test index of class `label`
    events = data.EventFolder(str(root), (".bin",), data._read_ncaltech101)
    _, test_idx = split_per_class(events.targets)
    c, name = events.files[test_idx[0]].split(os.sep)[-2:]
    rec = recordings[(c, int(name[6:10]))]
    torch.testing.assert_close(frames, _expected_frames(*rec, T=T, size=96, offset=5))
    # the frames are cached: later epochs do not read or bin events again
    cache_files = list((tmp_path / "cache").rglob("*.hdf5"))
    assert len(cache_files) == 1
    monkeypatch.setattr(data.EventsToFrames, "__getitem__", lambda self, i: pytest.fail("re-binned a cached item"))
    again, _ = test[0]
    assert torch.equal(again, frames)


def test_cifar10_dvs_npz_events(tmp_path):
    rng = np.random.default_rng(2)
    for c in data.CIFAR10_DVS_CLASSES:
        for i in range(2):
            n = 300
            t = np.sort(rng.integers(0, 10000, n))
            folder = tmp_path / "CIFAR10DVS" / c
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"cifar10_{c}_{i}.npz", t=t, x=rng.integers(0, 128, n), y=rng.integers(0, 128, n),
                     p=rng.integers(0, 2, n))
    T = 4
    train, test, info = build_datasets("cifar10-dvs", T=T, data_dir=str(tmp_path))
    assert (len(train), len(test), info.num_classes) == (10, 10, 10)
    frames, label = train[0]
    assert frames.shape == (T, 2, 48, 48) and 0 <= label < 10
    plain, _ = test[3]
    # bilinear 128 -> 48 keeps the event mass up to the border: about (48/128)^2 of the counts
    total = float(plain.sum())
    assert 300 * 0.8 * (48 / 128) ** 2 < total < 300 * 1.2 * (48 / 128) ** 2
    assert test.targets == list(range(10))


def test_cifar10_dvs_real_aedat4_file(tmp_path):
    """A real AEDAT 4.0 recording (written by iniVation's dv-processing, see
    tests/data/make_aedat4_sample.py) reads back through tonic and aedat as exactly the recorded
    events, and the CIFAR10-DVS pipeline bins it into frames."""
    import importlib.util
    import shutil
    from pathlib import Path

    sample = Path(__file__).parent / "data" / "dvs_sample.aedat4"
    spec = importlib.util.spec_from_file_location("make_aedat4_sample", sample.with_name("make_aedat4_sample.py"))
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    expected = maker.expected_events()

    events = data._read_cifar10_dvs(str(sample))
    assert len(events) == len(expected)
    for column, field in enumerate(("t", "x", "y", "p")):
        assert np.array_equal(events[field].astype(np.int64), expected[:, column]), field

    for c in data.CIFAR10_DVS_CLASSES:
        folder = tmp_path / "CIFAR10DVS" / c
        folder.mkdir(parents=True)
        for i in range(2):
            shutil.copy(sample, folder / f"cifar10_{c}_{i}.aedat4")
    T = 4
    train, test, info = build_datasets("cifar10-dvs", T=T, data_dir=str(tmp_path))
    assert (len(train), len(test), info.num_classes) == (10, 10, 10)
    frames, _ = test[0]
    assert frames.shape == (T, 2, 48, 48)
    # bilinear 128 -> 48 keeps the event mass up to the border: about (48/128)^2 of the counts
    n = len(expected)
    assert n * 0.8 * (48 / 128) ** 2 < float(frames.sum()) < n * 1.2 * (48 / 128) ** 2


def test_cifar10_dvs_aedat4_needs_aedat(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_aedat(name, *args, **kwargs):
        if name == "aedat":
            raise ImportError("No module named 'aedat'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_aedat)
    path = tmp_path / "x.aedat4"
    path.write_bytes(b"#!AER-DAT4.0\r\n")
    with pytest.raises(ImportError, match="pip install aedat"):
        data._read_cifar10_dvs(str(path))


@pytest.mark.parametrize("name", ["cifar10-dvs", "ncaltech101"])
def test_event_dataset_missing_says_download(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match="--download"):
        build_datasets(name, T=4, data_dir=str(tmp_path))


def test_frame_augment_flip_and_shift():
    torch.manual_seed(0)
    frames = torch.zeros(3, 2, 48, 48)
    frames[:, :, 20, 10] = 1
    outs = [data.FrameAugment(max_shift=4)(frames) for _ in range(20)]
    for out in outs:
        assert out.shape == frames.shape and out.sum() == frames.sum()  # moved, not lost (shift < margin)
        assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])  # same transform for every step
    assert len({tuple(o[0, 0].nonzero()[0].tolist()) for o in outs}) > 3


def test_split_per_class_fixed_disjoint():
    targets = [0] * 10 + [1] * 21 + [2] * 1 + [3] * 2
    train, test = split_per_class(targets)
    assert (train, test) == split_per_class(targets)
    assert sorted(train + test) == list(range(len(targets)))
    per_class = np.bincount(np.asarray(targets)[test], minlength=4).tolist()
    assert per_class == [1, 2, 0, 1]


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="cifar10-dvs") as e:
        build_datasets("mnist", T=4)
    assert "digits" in str(e.value) and "ncaltech101" in str(e.value)
