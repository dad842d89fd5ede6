"""gic.data reads what Keras' image_dataset_from_directory reads and more, and says what it skips.

One test per kind of photo that used to be dropped or to break the run: sub-folders of a class
folder, every extension Pillow decodes, file names that are not UTF-8, large JPEGs, the same photo
in two parts of an archive, float and 16-bit images. Images are generated, 32-64 px unless the case
is about size.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, features

import gic.data as gd
from gic.cli import main
from gic.config import DataConfig
from gic.data import (CACHE_FORMAT, IMAGE_EXTENSIONS, check_dataset, decode_image, load_dataset, make_synthetic,
                      prepare_split, skip_summary)
from gic.errors import DataError


def tiny(tmp_path: Path, per_class: int = 4) -> Path:
    root = tmp_path / "data"
    make_synthetic(root, per_class=per_class, size=32, seed=0)
    return root


def cfg_for(root: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(dir=root, image_size=kw.pop("image_size", 32), cache_dir=tmp_path / "cache", **kw)


def load_quietly(cfg: DataConfig) -> tuple[gd.Dataset, list[str]]:
    """The dataset and the texts of the warnings load_dataset gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(cfg)
    return ds, [str(w.message) for w in caught]


def save(img: Image.Image, path: Path | bytes, **kw) -> Path:
    path = Path(os.fsdecode(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def jpeg_bytes(colour=(200, 30, 30), size=(40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=95)
    return out.getvalue()


# ------------------------------------------------------------------------------------ sub-folders
def test_photos_in_sub_folders_of_a_class_folder_are_read_recursively(tmp_path):
    root = tiny(tmp_path)
    men = root / "train" / "men"
    (men / "2023" / "summer").mkdir(parents=True)
    shutil.move(men / "men_00000.png", men / "2023" / "men_00000.png")
    shutil.move(men / "men_00001.png", men / "2023" / "summer" / "men_00001.png")
    ds, said = load_quietly(cfg_for(root, tmp_path))
    assert len(ds.train) == 8 and said == []
    assert sum("/train/men/2023/" in p for p in ds.train.paths) == 2
    assert ds.train.labels.tolist() == [0] * 4 + [1] * 4
    report = check_dataset(root)
    assert report.errors == [] and report.warnings == [] and report.counts["train"] == {"men": 4, "women": 4}


def test_prepare_reads_and_keeps_sub_folders(tmp_path):
    raw = tmp_path / "raw"
    for part, n in (("traindata", 5), ("testdata", 2)):
        for label, cls in enumerate(gd.CLASS_NAMES):
            for i in range(n):
                sub = "2023/" if i % 2 else ""
                save(Image.new("RGB", (32, 32), (i, len(part), label)), raw / part / part / cls / f"{sub}{cls}_{i}.png")
    prepare_split(raw, tmp_path / "out", val_per_class=2, train_per_class=3, test_per_class=2)
    assert len(list((tmp_path / "out").rglob("*.png"))) == 14
    assert list((tmp_path / "out").glob("*/*/2023/*.png"))  # kept in their sub-folder: no name clash
    assert check_dataset(tmp_path / "out").errors == []


# ------------------------------------------------------------------------------------ formats
def test_extensions_come_from_pillows_registry():
    registered = Image.registered_extensions()
    assert set(IMAGE_EXTENSIONS) <= set(registered)
    assert {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".tif", ".bmp", ".gif", ".ppm", ".tga"} <= set(IMAGE_EXTENSIONS)
    assert ".pdf" not in IMAGE_EXTENSIONS and ".mpg" not in IMAGE_EXTENSIONS  # save-only; size-only
    assert (".avif" in IMAGE_EXTENSIONS) == (".avif" in registered and bool(features.check("avif")))
    assert (".webp" in IMAGE_EXTENSIONS) == bool(features.check("webp"))


def test_jfif_jpe_and_other_pillow_formats_are_loaded(tmp_path):
    root = tiny(tmp_path)
    men = root / "train" / "men"
    (men / "a.jfif").write_bytes(jpeg_bytes((200, 30, 30)))
    (men / "b.JPE").write_bytes(jpeg_bytes((30, 200, 30)))
    save(Image.new("RGB", (40, 40), (30, 30, 200)), men / "c.ppm")
    save(Image.new("RGB", (40, 40), (90, 90, 90)), men / "d.tga")
    extra = ["a.jfif", "b.JPE", "c.ppm", "d.tga"]
    if ".avif" in IMAGE_EXTENSIONS:
        save(Image.new("RGB", (40, 40), (250, 250, 0)), men / "e.avif", quality=95)
        extra.append("e.avif")
    ds, said = load_quietly(cfg_for(root, tmp_path))
    assert said == [] and len(ds.train) == 8 + len(extra)
    by_name = {Path(p).name: ds.train.images[i] for i, p in enumerate(ds.train.paths)}
    for name, colour in zip(extra, [(200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90), (250, 250, 0)]):
        assert np.abs(by_name[name].reshape(-1, 3).mean(0) - colour).max() < 8, name
    assert check_dataset(root).errors == []


def test_what_is_still_skipped_is_reported_the_same_by_the_loader_and_check(tmp_path):
    root = tiny(tmp_path)
    men, women = root / "train" / "men", root / "test" / "women"
    (men / "notes.txt").write_text("x")
    (men / "labels.json").write_text("{}")
    (women / "README").write_text("x")
    (men / ".DS_Store").write_bytes(b"\0")
    (women / "._women_00000.png").write_bytes(b"\0")  # macOS resource fork: hidden
    (men / ".thumbnails").mkdir()
    os.symlink(root / "validation", men / "elsewhere")
    expected = [  # paths sorted: test/ before train/
        f"skipped 3 file(s) that are not images this Pillow decodes (.json 1, .txt 1, no extension 1): "
        f"{women / 'README'}, {men / 'labels.json'}, {men / 'notes.txt'}",
        f"skipped 3 hidden file(s) or folder(s) (name starts with '.'): "
        f"{women / '._women_00000.png'}, {men / '.DS_Store'}, {men / '.thumbnails'}",
        f"skipped 1 link(s) to folders (not followed): {men / 'elsewhere'}",
    ]
    ds, said = load_quietly(cfg_for(root, tmp_path))
    assert said == expected and len(ds.train) == 8
    _, again = load_quietly(cfg_for(root, tmp_path))  # a cache hit says it again
    assert again == expected
    report = check_dataset(root)
    assert report.errors == [] and report.warnings == expected
    out = CliRunner().invoke(main, ["data", "check", str(root)])
    assert out.exit_code == 0 and all(f"warning: {line}" in out.output for line in expected)


def test_skip_summary_names_a_few_and_counts_the_rest(tmp_path):
    paths = [tmp_path / f"{i}.txt" for i in range(5)]
    (line,) = skip_summary({gd.layout.SKIP_NOT_IMAGE: paths})
    assert line.startswith("skipped 5 file(s) that are not images this Pillow decodes (.txt 5): ")
    assert line.endswith(f"{paths[2]} and 2 more") and str(paths[3]) not in line


# ------------------------------------------------------------------------------------ file names
def test_file_names_that_are_not_utf8_load_cache_and_print(tmp_path):
    root = tiny(tmp_path)
    men = os.fsencode(root / "train" / "men")
    os.rename(os.path.join(men, b"men_00000.png"), os.path.join(men, b"caf\xe9.png"))  # Latin-1, as old zips leave it
    cfg = cfg_for(root, tmp_path)
    ds, said = load_quietly(cfg)
    assert said == [] and len(ds.train) == 8
    odd = [p for p in ds.train.paths if os.fsencode(p).endswith(b"caf\xe9.png")]
    assert len(odd) == 1 and Path(odd[0]).is_file()  # the str opens the file
    cached, _ = load_quietly(cfg)  # from the .npz: the same paths, bytes intact
    assert cached.train.paths == ds.train.paths
    np.testing.assert_array_equal(cached.train.images, ds.train.images)
    assert gd.shown(odd[0]).endswith("caf\\xe9.png")

    report = check_dataset(root)
    assert report.errors == []
    (note,) = [w for w in report.warnings if "not valid UTF-8" in w]
    assert note.startswith("1 file name(s) not valid UTF-8") and note.endswith("caf\\xe9.png")
    for line in report.lines():
        line.encode("utf-8")  # printable anywhere
    out = CliRunner().invoke(main, ["data", "check", str(root)])
    assert out.exit_code == 0 and "caf\\xe9.png" in out.output


def test_a_bad_file_with_a_non_utf8_name_is_one_printable_error(tmp_path):
    root = tiny(tmp_path)
    bad = os.path.join(os.fsencode(root / "train" / "women"), b"\xe9t\xe9.jpg")
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError) as err:
        load_dataset(cfg_for(root, tmp_path))
    assert str(err.value).endswith("\\xe9t\\xe9.jpg: not a readable image (unknown or corrupt format)")
    str(err.value).encode("utf-8")
    res = CliRunner().invoke(main, ["data", "check", str(root)])
    assert res.exit_code == 2 and "\\xe9t\\xe9.jpg: not a readable image" in res.output


# ------------------------------------------------------------------------------------ large photos
def test_a_9000x8000_phone_jpeg_decodes_at_reduced_size(tmp_path):
    big = save(Image.new("RGB", (9000, 8000), (10, 120, 30)), tmp_path / "phone.jpg", quality=90)
    arr = decode_image(big, 64)  # default limit, 64 Mpx: the full size (72 Mpx) is never allocated
    assert arr.shape == (64, 64, 3) and np.abs(arr.reshape(-1, 3).mean(0) - (10, 120, 30)).max() < 4
    report = check_dataset_with(tmp_path, big)
    assert report.errors == []


def check_dataset_with(tmp_path: Path, photo: Path, **kw):
    root = tiny(tmp_path)
    shutil.copy(photo, root / "train" / "men" / photo.name)
    return check_dataset(root, **kw)


def test_max_image_pixels_is_a_setting_applied_to_the_decoded_size(tmp_path):
    root = tiny(tmp_path)
    men = root / "train" / "men"
    save(Image.new("RGB", (512, 384), (0, 0, 250)), men / "wide.jpg")  # 197k px claimed, 64x48 drafted
    save(Image.new("RGB", (512, 384), (0, 0, 250)), men / "wide.png")  # no draft: 197k px decoded
    assert DataConfig().max_image_pixels == gd.MAX_IMAGE_PIXELS == 64_000_000
    with pytest.raises(DataError, match=r"wide\.png: image too large .*512x384 px, limit 100,000 .*max_image_pixels"):
        load_dataset(cfg_for(root, tmp_path, max_image_pixels=100_000))
    low, said = load_quietly(cfg_for(root, tmp_path, max_image_pixels=100_000, on_bad_image="skip"))
    assert len(low.train) == 9 and len(said) == 2 and "wide.png" in said[0]
    assert said[1].startswith("skipped 1 of 18 images that could not be read")  # the count over every split
    high, said = load_quietly(cfg_for(root, tmp_path, max_image_pixels=200_000, on_bad_image="skip"))
    assert len(high.train) == 10 and said == []  # not the cache of the lower limit
    assert high.fingerprint != low.fingerprint  # another set of images: caches keyed by it must differ
    checked = check_dataset(root, max_image_pixels=100_000, image_size=32).errors
    assert len(checked) == 1 and "wide.png" in checked[0]


# ------------------------------------------------------------------------------------ prepare
def raw_with_shared_photos(raw: Path) -> Path:
    """traindata 6 + 6, testdata 3 + 3 distinct images, then copies: one test photo is also in
    traindata (another name), and traindata/men holds the same photo twice."""
    for part, n in (("traindata", 6), ("testdata", 3)):
        for label, cls in enumerate(gd.CLASS_NAMES):
            for i in range(n):
                save(Image.new("RGB", (32, 32), (10 * i, 100 + len(part), 60 * label)),
                     raw / part / part / cls / f"{part}_{cls}_{i}.png")
    men_train, men_test = raw / "traindata" / "traindata" / "men", raw / "testdata" / "testdata" / "men"
    for i in range(3):
        shutil.copy(men_train / f"traindata_men_{i}.png", men_test / f"zz_copy_{i}.png")
    shutil.copy(men_train / "traindata_men_0.png", men_train / "traindata_men_again.png")
    return raw


def test_prepare_keeps_identical_files_out_of_two_splits_and_reports_them(tmp_path):
    raw = raw_with_shared_photos(tmp_path / "raw")
    with pytest.warns(UserWarning) as caught:
        counts = prepare_split(raw, tmp_path / "out", val_per_class=2, train_per_class=4, test_per_class=3)
    assert counts == {"train": 8, "validation": 4, "test": 6}  # the sizes asked for, all the same
    (note,) = [str(w.message) for w in caught]
    men_train, men_test = raw / "traindata" / "traindata" / "men", raw / "testdata" / "testdata" / "men"
    assert note.startswith(f"{raw}: left out 3 file(s) with the same bytes as a file already in {tmp_path / 'out'}")
    assert note.endswith(f"{men_test / 'zz_copy_0.png'} (same bytes as {men_train / 'traindata_men_again.png'})")
    out = tmp_path / "out"
    # the first 3 of the shuffle would put zz_copy_0 in test and its twin in train
    assert not list(out.glob("*/men/zz_copy_*.png"))
    report = check_dataset(tmp_path / "out")
    assert report.errors == [] and not [w for w in report.warnings if "duplicate" in w]
    # deterministic, duplicates or not
    with pytest.warns(UserWarning):
        prepare_split(raw, tmp_path / "again", val_per_class=2, train_per_class=4, test_per_class=3)
    listing = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*.png"))  # noqa: E731
    assert listing(tmp_path / "out") == listing(tmp_path / "again")


def test_prepare_refuses_when_too_few_distinct_photos_remain(tmp_path):
    raw = raw_with_shared_photos(tmp_path / "raw")
    # testdata/men has 6 files but 3 are copies of traindata photos; ask for all of traindata
    with pytest.raises(DataError, match=r"testdata/men: found 6 images but only 3 with content not already chosen"):
        prepare_split(raw, tmp_path / "out", val_per_class=2, train_per_class=4, test_per_class=5)
    assert not (tmp_path / "out").exists()


def test_cli_prepare_shows_the_files_left_out(tmp_path):
    raw = raw_with_shared_photos(tmp_path / "raw")
    # a subprocess: pytest would capture the warning instead of letting it reach stderr
    res = subprocess.run([sys.executable, "-c", "from gic.cli import main; main()", "data", "prepare",
                          "--raw", str(raw), "--dest", str(tmp_path / "o"), "--val-per-class", "2",
                          "--train-per-class", "4", "--test-per-class", "3"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "train 8, validation 4, test 6" in res.stdout
    assert "left out 3 file(s) with the same bytes" in res.stderr and "zz_copy_1.png (same bytes as" in res.stderr


# ------------------------------------------------------------------------------------ bit depth
def test_float_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0.0, 1.0, 48, dtype=np.float32)[None, :].repeat(48, axis=0)
    unit = save(Image.fromarray(ramp), tmp_path / "unit.tif")  # 0..1: x255
    arr = decode_image(unit, 48)[..., 0].astype(int)
    assert arr[:, 0].max() == 0 and arr[:, -1].min() == 255 and abs(int(arr[:, 24].mean()) - round(24 / 47 * 255)) <= 2
    byte = save(Image.fromarray(ramp * 200), tmp_path / "byte.tif")  # within 0..255: kept
    assert abs(int(decode_image(byte, 48)[:, -1, 0].mean()) - 200) <= 1
    odd = save(Image.fromarray(ramp * 2000 - 1000), tmp_path / "odd.tif")  # else: min..max
    stretched = decode_image(odd, 48)[..., 0].astype(int)
    assert stretched[:, 0].max() == 0 and stretched[:, -1].min() == 255
    nan = ramp.copy()
    nan[:, :4] = np.nan
    assert decode_image(save(Image.fromarray(nan), tmp_path / "nan.tif"), 48)[:, 0, 0].max() == 0


def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path):
    ramp16 = np.linspace(0, 65535, 48).astype(np.uint16)[None, :].repeat(48, axis=0)
    png16 = save(Image.fromarray(ramp16), tmp_path / "gray16.png")
    assert Image.open(png16).mode.startswith("I")
    arr = decode_image(png16, 48)[..., 0].astype(int)
    assert arr[:, 0].max() == 0 and arr[:, -1].min() == 255 and np.all(np.diff(arr[0]) >= 0)
    wide = save(Image.fromarray(ramp16.astype(np.int32) * 1000), tmp_path / "wide.tif")
    assert decode_image(wide, 48)[:, -1, 0].min() == 255  # beyond 16 bits: min..max, not clipped at 255


def test_check_says_how_deep_images_are_scaled(tmp_path):
    root = tiny(tmp_path)
    ramp = np.linspace(0.0, 1.0, 40, dtype=np.float32)[None, :].repeat(40, axis=0)
    save(Image.fromarray(ramp), root / "train" / "men" / "float.tif")
    save(Image.fromarray((ramp * 65535).astype(np.uint16)), root / "train" / "men" / "deep.png")
    report = check_dataset(root)
    assert report.errors == []
    assert any("float.tif: 32-bit float image (values 0..1 scaled x255), converted to 8-bit RGB" in w
               for w in report.warnings)
    assert any("deep.png: 16-bit grayscale image (0..65535 scaled to 0..255), converted" in w for w in report.warnings)


def test_cache_format_was_bumped_for_the_new_decoding():
    assert CACHE_FORMAT >= 2


def test_unreadable_images_skipped_are_reported_on_every_load_cache_hits_too(tmp_path):
    root = tiny(tmp_path)
    (root / "validation" / "women" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "train" / "men" / "empty.png").write_bytes(b"")
    cfg = cfg_for(root, tmp_path, on_bad_image="skip")
    first, said = load_quietly(cfg)  # decodes, and caches what it kept
    assert said[-1].startswith("skipped 2 of 18 images that could not be read")  # counted over every split
    again, said_again = load_quietly(cfg)  # a cache hit: nothing decoded, the same report
    assert len(again.train) == len(first.train) and len(again.validation) == len(first.validation)
    assert said_again == [said_again[0]] and said_again[0].startswith("skipped 2 of 18 images that could not be read")
    assert "broken.jpg" in said_again[0] and "empty.png" in said_again[0]
