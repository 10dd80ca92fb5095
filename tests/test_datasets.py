"""Tests of the datasets package: loaders, splits, preprocessing and the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import datasets
from datasets import (
    Dataset,
    DatasetError,
    InputSpec,
    SplitError,
    available_datasets,
    load_dataset,
    load_image,
    load_splits,
    make_splits,
    representative_samples,
    save_splits,
)
from datasets.__main__ import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits_splits(digits):
    return make_splits(digits, seed=0)


def _constant_dataset(n=120):
    """Each sample's pixels are all equal to its index, so values identify samples."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 1))
    return Dataset(name="const", images=images.copy(), labels=np.arange(n, dtype=np.int64) % 2,
                   class_names=["a", "b"], groups=np.arange(n, dtype=np.int64) // 3, options={})


# --- package and registry -------------------------------------------------------------

def test_package_imports_without_sklearn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import datasets, datasets.preprocess, datasets.splits\n"
            "assert sys.modules['sklearn'] is None\n"
            "try:\n    datasets.load_dataset('digits')\n"
            "except datasets.DatasetError as e:\n    print('ERR', e)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ERR" in result.stdout and "pip install scikit-learn" in result.stdout


def test_available_datasets():
    assert available_datasets() == ["digits", "folder", "mnist", "shapes"]


def test_unknown_name_and_options_are_clear():
    with pytest.raises(DatasetError, match=r"unknown data set 'nope'.*digits, folder"):
        load_dataset("nope")
    with pytest.raises(DatasetError, match=r"no option variant; its options are: variants=8"):
        load_dataset("digits", variant=3)
    with pytest.raises(DatasetError, match=r"needs option path"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match=r"variants=0 is invalid: expected an integer from 1"):
        load_dataset("digits", variants=0)
    with pytest.raises(DatasetError, match=r"noise='a lot' is invalid"):
        load_dataset("digits", noise="a lot")


def test_input_spec_round_trip_and_checks():
    spec = InputSpec(28, 32, 1)
    assert spec.mode == "L" and InputSpec(2, 2, 3).mode == "RGB"
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(DatasetError, match="channels=2"):
        InputSpec(8, 8, 2)
    with pytest.raises(DatasetError, match="lacks channels"):
        InputSpec.from_dict({"height": 8, "width": 8})


def test_dataset_rejects_wrong_arrays():
    with pytest.raises(DatasetError, match="images must be a uint8 array"):
        Dataset("x", np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int64), ["a"],
                np.zeros(2, np.int64), {})
    with pytest.raises(DatasetError, match="labels must be an int64 array of shape"):
        Dataset("x", np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3, np.int64), ["a"],
                np.zeros(2, np.int64), {})


# --- digits ---------------------------------------------------------------------------

def test_digits_shape_and_labels(digits):
    assert digits.images.shape == (1797 * 8, 28, 28, 1) and digits.images.dtype == np.uint8
    assert digits.labels.dtype == np.int64 and digits.groups.dtype == np.int64
    assert digits.class_names == [str(d) for d in range(10)]
    assert digits.input_spec == InputSpec(28, 28, 1)
    assert set(np.unique(digits.labels)) == set(range(10))
    assert digits.images.max() > 200 and digits.images.min() == 0
    # The 8 variants of an original are consecutive, share its group and its label.
    assert np.array_equal(digits.groups[:16], np.repeat([0, 1], 8))
    assert len(set(digits.labels[:8])) == 1
    assert json.loads(json.dumps(digits.options)) == {"variants": 8, "seed": 0, "noise": 0.0}


def test_digits_deterministic_and_seeded(digits):
    again = load_dataset("digits", **digits.options)
    assert np.array_equal(again.images, digits.images)
    assert np.array_equal(again.labels, digits.labels)
    other = load_dataset("digits", variants=2, seed=1)
    # Variant 0 is the plain resized image whatever the seed; variant 1 depends on the seed.
    assert np.array_equal(other.images[0::2], digits.images[0::8])
    assert not np.array_equal(other.images[1::2], digits.images[1::8])


def test_digits_variants_differ_from_original(digits):
    plain, variants = digits.images[0::8].astype(int), digits.images[1::8].astype(int)
    assert np.abs(plain - variants).mean() > 5


def test_digits_noise_option():
    clean = load_dataset("digits", variants=1)
    noisy = load_dataset("digits", variants=1, noise=0.2)
    assert noisy.options["noise"] == 0.2
    diff = noisy.images.astype(int) - clean.images.astype(int)
    assert 20 < np.abs(diff).mean() < 60
    assert np.array_equal(noisy.images, load_dataset("digits", variants=1, noise=0.2).images)


def test_digits_default_split_sizes(digits, digits_splits):
    assert len(digits_splits["train"]) >= 10000
    assert len(digits_splits["test"]) >= 2000
    assert len(digits_splits["val"]) >= 1000


# --- splits ---------------------------------------------------------------------------

def test_splits_disjoint_cover_sorted_and_by_group(digits, digits_splits):
    parts = [digits_splits[k] for k in ("train", "val", "test")]
    merged = np.concatenate(parts)
    assert len(merged) == len(digits) and np.array_equal(np.sort(merged), np.arange(len(digits)))
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    group_sets = [set(digits.groups[p]) for p in parts]
    assert not (group_sets[0] & group_sets[1] or group_sets[0] & group_sets[2]
                or group_sets[1] & group_sets[2])


def test_splits_deterministic_from_seed(digits, digits_splits):
    again = make_splits(digits, seed=0)
    assert all(np.array_equal(again[k], digits_splits[k]) for k in digits_splits)
    other = make_splits(digits, seed=1)
    assert not np.array_equal(other["test"], digits_splits["test"])


def test_splits_fractions_validated():
    ds = _constant_dataset()
    with pytest.raises(SplitError, match=r"sum to 1 \(they sum to 1.5\)"):
        make_splits(ds, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(SplitError, match="each must be > 0"):
        make_splits(ds, fractions=(1.0, 0.0, 0.0))
    with pytest.raises(SplitError, match="expected 3 numbers"):
        make_splits(ds, fractions=(0.5, 0.5))
    tiny = Dataset("tiny", ds.images[:6], ds.labels[:6], ["a", "b"], ds.groups[:6], {})
    with pytest.raises(SplitError, match="has 2 group"):
        make_splits(tiny)


def test_small_dataset_gets_every_split():
    ds = _constant_dataset(9)  # 3 groups
    splits = make_splits(ds, fractions=(0.8, 0.1, 0.1))
    assert all(len(splits[k]) == 3 for k in ("train", "val", "test"))


def test_save_load_splits_round_trip(tmp_path, digits_splits):
    path = save_splits(str(tmp_path / "sub" / "splits.npz"), digits_splits)
    loaded = load_splits(path)
    assert set(loaded) == {"train", "val", "test"}
    assert all(np.array_equal(loaded[k], digits_splits[k]) for k in loaded)


def test_load_splits_errors(tmp_path):
    with pytest.raises(SplitError, match="does not exist"):
        load_splits(str(tmp_path / "missing.npz"))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(SplitError, match="corrupt or not an .npz"):
        load_splits(str(corrupt))
    partial = tmp_path / "partial.npz"
    np.savez(partial, train=np.arange(3), test=np.arange(3, 5))
    with pytest.raises(SplitError, match="lacks val"):
        load_splits(str(partial))
    overlap = tmp_path / "overlap.npz"
    np.savez(overlap, train=np.arange(3), val=np.arange(2, 4), test=np.arange(5, 6))
    with pytest.raises(SplitError, match="share samples"):
        load_splits(str(overlap))


def test_representative_samples_only_from_train():
    ds = _constant_dataset(120)
    splits = make_splits(ds, seed=3)
    reps = representative_samples(ds, splits, count=50, seed=0)
    assert reps.dtype == np.float32 and reps.shape == (51, 4, 4, 1), "the range sample, then 50 train images"
    first = np.rint(reps[0] * 255).ravel()
    assert (first.min(), first.max()) == (0, 255), "black and white seen, for the input range"
    assert np.array_equal(first[1:-1], np.rint(reps[1] * 255).ravel()[1:-1]), "else the first image as it is"
    reps = reps[1:]
    ids = set(np.rint(reps[:, 0, 0, 0] * 255).astype(int))
    assert len(ids) == 50 and ids <= set(splits["train"].tolist())
    again = representative_samples(ds, splits, count=50, seed=0)
    assert np.array_equal(reps, again[1:])
    with pytest.warns(UserWarning, match="using all of them"):
        everything = representative_samples(ds, splits, count=10_000)
    assert len(everything) == len(splits["train"]) + 1


def test_representative_samples_digits(digits, digits_splits):
    reps = representative_samples(digits, digits_splits, count=200)[1:]
    assert reps.shape == (200, 28, 28, 1) and 0.0 <= reps.min() and reps.max() <= 1.0
    minus1_1 = representative_samples(digits, digits_splits, count=5, normalization=(128.0, 128.0))
    assert minus1_1.min() == -1.0 and minus1_1.max() == 127 / 128
    train_bytes = {digits.images[i].tobytes() for i in digits_splits["train"]}
    pixels = np.rint(reps * 255).astype(np.uint8)
    assert all(p.tobytes() in train_bytes for p in pixels)


# --- shapes ---------------------------------------------------------------------------

def test_shapes_size_classes_and_determinism(shapes):
    assert shapes.images.shape == (60, 24, 24, 3)
    assert shapes.class_names == ["circle", "square", "triangle"]
    assert np.array_equal(np.bincount(shapes.labels), [20, 20, 20])
    assert np.array_equal(shapes.groups, np.arange(60))
    again = load_dataset("shapes", **shapes.options)
    assert np.array_equal(again.images, shapes.images)
    other = load_dataset("shapes", classes=3, size=24, samples=20, seed=6)
    assert not np.array_equal(other.images, shapes.images)


def test_shapes_all_classes_and_bad_option():
    six = load_dataset("shapes", classes=6, size=40, samples=3)
    assert six.class_names[4:] == ["stripes", "ring"] and six.images.shape == (18, 40, 40, 3)
    # Every image shows a shape: more than one colour.
    assert all(len(np.unique(img.reshape(-1, 3), axis=0)) > 1 for img in six.images)
    with pytest.raises(DatasetError, match=r"classes=7 is invalid: expected an integer from 2 to 6"):
        load_dataset("shapes", classes=7)


# --- mnist ----------------------------------------------------------------------------

def test_mnist_from_local_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "y_train": np.array([0, 1, 2, 3, 4], np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              "y_test": np.array([7, 8, 9], np.uint8)}
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    ds = load_dataset("mnist", path=str(path))
    assert ds.images.shape == (8, 28, 28, 1) and ds.labels.dtype == np.int64
    assert np.array_equal(ds.images[5:, :, :, 0], arrays["x_test"])
    assert np.array_equal(ds.labels, [0, 1, 2, 3, 4, 7, 8, 9])
    assert ds.class_names == [str(d) for d in range(10)]
    assert np.array_equal(load_dataset("mnist", **ds.options).images, ds.images)


def test_mnist_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*never downloads.*mnist.npz"):
        load_dataset("mnist", path=str(tmp_path / "mnist.npz"))
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="lacks y_train, x_test, y_test"):
        load_dataset("mnist", path=str(partial))


# --- command line ---------------------------------------------------------------------

def test_cli_list(capsys):
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == available_datasets()


def test_cli_export_writes_index_class_pngs(tmp_path, capsys):
    out = tmp_path / "samples"
    assert cli_main(["export", "shapes", "--out", str(out), "--count", "4",
                     "-o", "samples=10", "-o", "size=16"]) == 0
    files = sorted(os.listdir(out))
    assert len(files) == 4
    ds = load_dataset("shapes", samples=10, size=16)
    test_split = set(make_splits(ds, seed=0)["test"].tolist())
    for name in files:
        index, label = name[:-4].split("_")
        assert int(index) in test_split and label == ds.class_names[ds.labels[int(index)]]
        pixels = load_image(str(out / name), ds.input_spec)
        assert np.array_equal(pixels, ds.images[int(index)])
    assert "wrote 4 shapes images" in capsys.readouterr().out


def test_cli_export_errors_and_help(tmp_path, capsys):
    assert cli_main(["export", "mnist", "--out", str(tmp_path)]) == 2
    assert "needs option path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", "--help"])
    assert exit_info.value.code == 0 and "--count" in capsys.readouterr().out


def test_public_api_exports():
    for name in ("Dataset", "InputSpec", "load_dataset", "available_datasets", "DatasetError",
                 "load_image", "to_model_input", "ImageError", "make_splits", "save_splits",
                 "load_splits", "representative_samples"):
        assert hasattr(datasets, name), name
