"""The folder data set: class sub-folders of photos as phones give them, and its decoded-image cache."""
import pathlib

import numpy as np
import pytest
from PIL import Image

from datasets import DatasetError, InputSpec, load_dataset, load_image


def _make_tree(root):
    rng = np.random.default_rng(0)
    for name, count in (("dog", 2), ("cat", 3)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_folder_loader(tmp_path):
    root = _make_tree(tmp_path / "photos")
    ds = load_dataset("folder", path=str(root), size=8)
    assert [(pathlib.Path(s["path"]).name, "not a readable image" in s["reason"]) for s in ds.skipped] == \
        [("notes.txt", True)]
    assert ds.class_names == ["cat", "dog"]
    assert ds.images.shape == (5, 8, 8, 3) and np.array_equal(ds.labels, [0, 0, 0, 1, 1])
    assert np.array_equal(ds.groups, np.arange(5))
    assert ds.options == {"path": str(root), "channels": 3, "height": 8, "width": 8}
    grey = load_dataset("folder", path=str(root), channels=1, height=12, width=16)
    assert grey.images.shape == (5, 12, 16, 1)
    again = load_dataset("folder", **ds.options)
    assert np.array_equal(again.images, ds.images)


def test_folder_reads_sub_folders_and_turns_photos_as_exif_says(tmp_path):
    root = tmp_path / "photos"
    for name in ("a", "b"):
        (root / name / "2024" / "trip").mkdir(parents=True)
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255                     # left half white, as stored (landscape)
    exif = Image.Exif()
    exif[0x0112] = 6                         # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(root / "a" / "2024" / "trip" / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(pixels).save(root / "b" / "plain.png")
    (root / "b" / "2024" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    ds = load_dataset("folder", path=str(root), height=40, width=20)
    assert ds.labels.tolist() == [0, 1] and ds.images.shape == (2, 40, 20, 3)
    turned = ds.images[0, :, :, 0].astype(int)
    assert turned[:20].mean() > 200 and turned[20:].mean() < 50, "white ends up on top once turned upright"
    assert [pathlib.Path(s["path"]).name for s in ds.skipped] == ["broken.jpg"]
    portrait = root / "a" / "2024" / "trip" / "phone.jpg"
    assert load_image(portrait, InputSpec(40, 20, 3)).shape == (40, 20, 3), "its size is the turned size"


def test_folder_images_are_decoded_once_into_a_disk_cache_and_read_by_index(tmp_path, monkeypatch, capsys):
    import datasets.folder
    from datasets.image_cache import DiskImages
    root = _make_tree(tmp_path / "photos")
    first = load_dataset("folder", path=str(root), size=8)
    assert isinstance(first.images, DiskImages)
    whole = np.asarray(first.images)
    assert whole.shape == (5, 8, 8, 3) and np.array_equal(first.images[[4, 0, 4]], whole[[4, 0, 4]])
    assert np.array_equal(first.images[-1], whole[-1])
    assert np.array_equal(first.images[1:3, 2, :, 0], whole[1:3, 2, :, 0])
    with pytest.raises(IndexError):
        first.images[[5]]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")
    monkeypatch.setattr(datasets.folder, "load_image", no_decoding)
    again = load_dataset("folder", path=str(root), size=8)
    assert np.array_equal(np.asarray(again.images), whole) and again.skipped == first.skipped
    monkeypatch.undo()
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "dog" / "0.png")   # a changed file
    changed = load_dataset("folder", path=str(root), size=8)
    assert changed.images[3].max() == 0 and np.array_equal(changed.images[:3], whole[:3])
    with open(changed.images.path, "r+b") as f:   # a cache cut short is noticed and decoded again
        f.truncate(10)
    repaired = load_dataset("folder", path=str(root), size=8)
    assert "is damaged" in capsys.readouterr().err and np.array_equal(np.asarray(repaired.images)[:3], whole[:3])


def test_folder_errors(tmp_path):
    root = _make_tree(tmp_path / "photos")
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty has no readable"):
        load_dataset("folder", path=str(root))
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"has 1 class sub-folder.*at least 2"):
        load_dataset("folder", path=str(one))
    with pytest.raises(DatasetError, match="is not a directory"):
        load_dataset("folder", path=str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="channels=4 is invalid"):
        load_dataset("folder", path=str(root), channels=4)


def test_folder_reads_images_as_the_input_contract_says(tmp_path):
    """Colour order and resize method are the model's: BGR reverses the channels, nearest keeps source pixels;
    the options (and so the cache key and the run's input spec) say which."""
    root = _make_tree(tmp_path / "photos")
    plain = load_dataset("folder", path=str(root), size=8)
    bgr = load_dataset("folder", path=str(root), size=8, color_order="BGR")
    nearest = load_dataset("folder", path=str(root), size=8, resize_method="nearest")
    assert np.array_equal(bgr.images[:], plain.images[:][..., ::-1]), "the same pixels, channels reversed"
    assert not np.array_equal(nearest.images[:], plain.images[:])
    assert bgr.options["color_order"] == "BGR" and "resize_method" not in bgr.options
    assert bgr.input_spec == InputSpec(8, 8, 3, color_order="BGR")
    assert InputSpec.from_dict(nearest.input_spec.to_dict()).resize_method == "nearest"
    with pytest.raises(DatasetError, match="resize method 'cubic' is unknown"):
        load_dataset("folder", path=str(root), size=8, resize_method="cubic")
