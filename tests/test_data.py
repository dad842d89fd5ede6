"""gic.data: synthetic data, check, loader + cache, seed split, safe extraction, Kaggle credentials, CLI."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gic.data as gd
from gic.cli import main
from gic.config import DataConfig
from gic.data import (CLASS_NAMES, SPLITS, check_dataset, decode_image, download_kaggle, kaggle_credentials_source,
                      load_dataset, make_synthetic, prepare_split, safe_extract)
from gic.errors import DataError


def tiny(tmp_path: Path, name: str = "data", per_class: int = 4, size: int = 32, seed: int = 0) -> Path:
    root = tmp_path / name
    make_synthetic(root, per_class=per_class, size=size, seed=seed)
    return root


def all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def cfg_for(root: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(dir=root, image_size=kw.pop("image_size", 32), cache_dir=tmp_path / "cache", **kw)


# ------------------------------------------------------------------------------------ synthetic
def test_synthetic_layout_counts_and_same_seed_same_bytes(tmp_path):
    counts = make_synthetic(tmp_path / "a", per_class=4, size=32, seed=0)
    make_synthetic(tmp_path / "b", per_class=4, size=32, seed=0)
    make_synthetic(tmp_path / "c", per_class=4, size=32, seed=1)
    assert counts == {"train": 8, "validation": 4, "test": 4}  # val max(2, 4//4), test max(2, 4//2) per class
    a, b, c = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b"), all_bytes(tmp_path / "c")
    assert len(a) == 16 + 1 and a == b  # 16 images and synthetic.json
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    for split in SPLITS:
        for cls in CLASS_NAMES:
            assert len(list((tmp_path / "a" / split / cls).glob("*.png"))) == counts[split] // 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_synthetic_split_sizes_follow_the_seed_ratio(tmp_path):
    assert make_synthetic(tmp_path / "d", per_class=40, size=16) == {"train": 80, "validation": 20, "test": 40}


def test_synthetic_refuses_a_non_empty_destination(tmp_path):
    root = tiny(tmp_path)
    with pytest.raises(DataError, match="already exists and is not empty"):
        make_synthetic(root, per_class=4, size=32)


def test_shared_synth_dir_is_a_clean_dataset(synth_dir):
    report = check_dataset(synth_dir)
    assert report.errors == [] and report.warnings == []
    assert report.counts == {"train": {"men": 24, "women": 24}, "validation": {"men": 6, "women": 6},
                             "test": {"men": 12, "women": 12}}
    assert report.lines()[-1].endswith("ok (train 24/24, validation 6/6, test 12/12 images of men/women)")


# ------------------------------------------------------------------------------------ check
def one(findings: list[str], needle: str) -> str:
    hits = [f for f in findings if needle in f]
    assert len(hits) == 1, (needle, findings)
    return hits[0]


def test_check_layout_errors(tmp_path):
    root = tiny(tmp_path)
    shutil.rmtree(root / "test" / "women")
    (root / "extra").mkdir()
    (root / "train" / "children").mkdir()
    for p in (root / "validation" / "men").iterdir():
        p.unlink()
    (root / "README.txt").write_text("notes")
    report = check_dataset(root)
    assert one(report.errors, "missing class folder").startswith(str(root / "test" / "women"))
    assert one(report.errors, "unexpected split folder").startswith(str(root / "extra"))
    assert one(report.errors, "unexpected class folder").startswith(str(root / "train" / "children"))
    assert one(report.errors, "no images").startswith(str(root / "validation" / "men"))
    assert one(report.warnings, "stray file").startswith(str(root / "README.txt"))
    assert len(report.errors) == 4


def test_check_missing_split_and_missing_root(tmp_path):
    root = tiny(tmp_path)
    shutil.rmtree(root / "validation")
    assert one(check_dataset(root).errors, "missing split folder").startswith(str(root / "validation"))
    with pytest.raises(DataError, match="no such data folder"):
        check_dataset(tmp_path / "nope")


def test_check_undecodable_files_are_errors(tmp_path):
    root = tiny(tmp_path)
    men = root / "train" / "men"
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, "JPEG")
    (men / "corrupt.jpg").write_bytes(jpeg.getvalue()[:300] + b"\x00" * 50)
    (men / "truncated.png").write_bytes((men / "men_00000.png").read_bytes()[:-40])
    (men / "empty.jpg").write_bytes(b"")
    (men / "text.jpg").write_text("this is not a JPEG")
    report = check_dataset(root)
    for name in ("corrupt.jpg", "truncated.png", "empty.jpg", "text.jpg"):
        assert one(report.errors, name).startswith(str(men / name))
    assert "empty file" in one(report.errors, "empty.jpg")
    assert len(report.errors) == 4


def write_odd_modes(folder: Path) -> dict[str, Path]:
    rgb = Image.linear_gradient("L").resize((40, 40)).convert("RGB")
    return {
        "grayscale": save(rgb.convert("L"), folder / "gray.png"),
        "RGBA": save(rgb.convert("RGBA"), folder / "rgba.png"),
        "palette": save(rgb.convert("P"), folder / "palette.png"),
        "CMYK": save(rgb.convert("CMYK"), folder / "cmyk.jpg", format="JPEG"),
        "16-bit": save(Image.fromarray(np.full((40, 40), 40000, np.uint16)), folder / "gray16.png"),
    }


def test_check_odd_modes_and_tiny_images_are_warnings(tmp_path):
    root = tiny(tmp_path)
    files = write_odd_modes(root / "train" / "women")
    save(Image.new("RGB", (20, 24)), root / "train" / "women" / "small.png")
    report = check_dataset(root)
    assert report.errors == []
    for what, path in files.items():
        assert "converted to 8-bit RGB" in one(report.warnings, str(path)) and what in one(report.warnings, str(path))
    assert "tiny image (20x24 px" in one(report.warnings, "small.png")


def test_check_duplicates_across_splits_are_leakage_errors(tmp_path):
    root = tiny(tmp_path)
    src = root / "train" / "men" / "men_00000.png"
    shutil.copy(src, root / "test" / "men" / "copy.png")
    shutil.copy(root / "train" / "men" / "men_00001.png", root / "train" / "men" / "again.png")
    report = check_dataset(root)
    leak = one(report.errors, "leakage")
    assert str(src) in leak and str(root / "test" / "men" / "copy.png") in leak
    assert "again.png" in one(report.warnings, "duplicate content within one class")


def test_check_imbalance_is_a_warning(tmp_path):
    root = tiny(tmp_path, per_class=8)
    for p in sorted((root / "train" / "women").iterdir())[:4]:
        p.unlink()
    report = check_dataset(root)
    assert report.errors == []
    assert "men 8, women 4" in one(report.warnings, "class imbalance")


def test_check_symlink_loops_do_not_hang(tmp_path):
    root = tiny(tmp_path)
    men = root / "train" / "men"
    os.symlink("loop.jpg", men / "loop.jpg")  # a link to itself
    os.symlink("..", men / "up")  # a folder link that would recurse forever
    os.symlink(root, root / "train" / "women" / "root")
    report = check_dataset(root)
    assert one(report.errors, "loop.jpg").startswith(str(men / "loop.jpg"))
    assert len(report.errors) == 1
    assert "link(s) to folders (not followed)" in one(report.warnings, str(men / "up"))


def test_cli_check_exit_codes(tmp_path, synth_dir):
    runner = CliRunner()
    ok = runner.invoke(main, ["data", "check", str(synth_dir)])
    assert ok.exit_code == 0 and "ok" in ok.output
    root = tiny(tmp_path)
    save(Image.new("L", (40, 40)), root / "train" / "men" / "gray.png")
    warned = runner.invoke(main, ["data", "check", str(root)])
    assert warned.exit_code == 0 and "warning: " in warned.output and "gray.png" in warned.output
    (root / "train" / "men" / "bad.jpg").write_text("nope")
    bad = runner.invoke(main, ["data", "check", str(root)])
    assert bad.exit_code == 2 and f"error: {root / 'train' / 'men' / 'bad.jpg'}" in bad.output
    missing = runner.invoke(main, ["data", "check", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "error: " in missing.stderr and "no such data folder" in missing.stderr


# ------------------------------------------------------------------------------------ decoding
def test_decode_converts_every_mode_to_rgb(tmp_path):
    files = write_odd_modes(tmp_path)
    for path in files.values():
        arr = decode_image(path, 32)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    # 16-bit values are scaled, not clipped: 40000 / 257 ~ 156
    assert np.all(np.abs(decode_image(files["16-bit"], 32).astype(int) - 156) <= 1)
    # fully transparent pixels become white, whatever colour they store
    transparent = save(Image.new("RGBA", (40, 40), (10, 20, 30, 0)), tmp_path / "clear.png")
    assert np.all(decode_image(transparent, 16) == 255)
    palette = Image.new("P", (40, 40), 3)
    palette.putpalette([0, 0, 0] * 3 + [0, 200, 0] + [0, 0, 0] * 252)
    assert np.all(decode_image(save(palette, tmp_path / "pal.gif"), 16)[..., 1] == 200)


def test_decode_big_jpeg_uses_draft_and_bombs_are_refused(tmp_path):
    big = save(Image.new("RGB", (2400, 1600), (0, 90, 0)), tmp_path / "big.jpg", quality=90)
    arr = decode_image(big, 48)
    assert arr.shape == (48, 48, 3) and abs(int(arr[..., 1].mean()) - 90) <= 3
    # the limit applies to the size a JPEG is decoded at (1/8 here), not to the size it claims
    assert decode_image(big, 48, max_pixels=100_000).shape == (48, 48, 3)
    with pytest.raises(DataError, match=r"big\.jpg: image too large .*300x200 px at reduced scale, 2400x1600 px in full"):
        decode_image(big, 48, max_pixels=50_000)
    png = save(Image.new("RGB", (400, 300)), tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png: image too large to decode safely \(400x300 px, limit 100,000"):
        decode_image(png, 48, max_pixels=100_000)


# ------------------------------------------------------------------------------------ loader
def test_load_synthetic_source_generates_then_loads(tmp_path):
    cfg = DataConfig(source="synthetic", dir=tmp_path / "gen", image_size=32, cache_dir=tmp_path / "cache",
                     synthetic={"per_class": 4, "size": 40, "seed": 3})
    ds = load_dataset(cfg)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (8, 4, 4)
    assert ds.train.images.shape == (8, 32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.dtype == np.int32 and ds.train.labels.tolist() == [0] * 4 + [1] * 4
    assert ds.class_names == CLASS_NAMES and ds.image_size == 32 and len(ds.fingerprint) == 64
    assert ds.train.paths == sorted(ds.train.paths) and "train/men/men_00000.png" in ds.train.paths[0]


def test_missing_folder_source_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"nope: no such data folder.*data.source"):
        load_dataset(cfg_for(tmp_path / "nope", tmp_path))
    root = tiny(tmp_path)
    shutil.rmtree(root / "validation" / "women")
    with pytest.raises(DataError, match=r"validation/women: missing folder"):
        load_dataset(cfg_for(root, tmp_path))


def test_cache_hit_skips_decoding_and_changes_invalidate_it(tmp_path, monkeypatch):
    root = tiny(tmp_path)
    cfg = cfg_for(root, tmp_path)
    first = load_dataset(cfg)
    cached = gd.cache_path(cfg, first.fingerprint)
    assert cached.is_file() and cached.parent == tmp_path / "cache"
    assert not [p for p in cached.parent.iterdir() if p.suffix == ".tmp"]

    real_decode = gd.decode_image

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although the cache is current")

    monkeypatch.setattr(gd, "decode_image", refuse)
    second = load_dataset(cfg)
    assert second.fingerprint == first.fingerprint
    for split in SPLITS:
        np.testing.assert_array_equal(second.split(split).images, first.split(split).images)
        np.testing.assert_array_equal(second.split(split).labels, first.split(split).labels)
        assert second.split(split).paths == first.split(split).paths

    # another image size is another fingerprint (and another decode)
    decoded: list[Path] = []

    def counting(path, size, **kwargs):
        decoded.append(Path(path))
        return real_decode(path, size, **kwargs)

    monkeypatch.setattr(gd, "decode_image", counting)
    assert load_dataset(cfg_for(root, tmp_path, image_size=40)).fingerprint != first.fingerprint
    assert len(decoded) == 16

    # rewrite one file: new fingerprint, new arrays
    target = root / "train" / "men" / "men_00000.png"
    save(Image.new("RGB", (32, 32), (1, 2, 3)), target)
    decoded.clear()
    changed = load_dataset(cfg)
    assert changed.fingerprint != first.fingerprint and len(decoded) == 16
    assert np.all(changed.train.images[0] == (1, 2, 3))

    # add and remove files
    shutil.copy(target, root / "train" / "men" / "zz_added.png")
    added = load_dataset(cfg)
    assert len(added.train) == 9 and added.fingerprint != changed.fingerprint
    (root / "test" / "women" / "women_00000.png").unlink()
    removed = load_dataset(cfg)
    assert len(removed.test) == 3 and removed.fingerprint != added.fingerprint


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    root = tiny(tmp_path)
    cfg = cfg_for(root, tmp_path)
    ds = load_dataset(cfg)
    gd.cache_path(cfg, ds.fingerprint).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable data cache"):
        again = load_dataset(cfg)
    np.testing.assert_array_equal(again.train.images, ds.train.images)


def test_cache_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GIC_CACHE_DIR", str(tmp_path / "env-cache"))
    assert gd.cache_dir(None) == tmp_path / "env-cache"
    assert gd.cache_dir(tmp_path / "cfg") == tmp_path / "cfg"
    monkeypatch.delenv("GIC_CACHE_DIR")
    assert gd.cache_dir(None) == Path.home() / ".cache" / "gic"


def test_bad_image_error_names_the_file_and_skip_warns(tmp_path):
    root = tiny(tmp_path)
    bad = root / "validation" / "women" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(DataError, match=f"^{bad}: not a readable image"):
        load_dataset(cfg_for(root, tmp_path))
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = load_dataset(cfg_for(root, tmp_path, on_bad_image="skip"))
    assert len(ds.validation) == 4 and not any("broken" in p for p in ds.validation.paths)
    with pytest.raises(DataError, match="broken.jpg"):  # the skip cache does not hide it from `error`
        load_dataset(cfg_for(root, tmp_path))


# ------------------------------------------------------------------------------------ seed split
def fake_raw(raw: Path, n_train=(12, 10), n_test=(5, 6), nested=True) -> Path:
    for part, counts in (("traindata", n_train), ("testdata", n_test)):
        base = raw / part / part if nested else raw / part
        for label, (cls, n) in enumerate(zip(CLASS_NAMES, counts)):
            for i in range(n):
                save(Image.new("RGB", (8, 8), (i, len(part), label)), base / cls / f"{part}_{cls}_{i:03d}.jpg",
                     format="PNG")
    return raw


def listing(root: Path) -> dict[str, list[str]]:
    return {f"{s}/{c}": sorted(p.name for p in (root / s / c).iterdir()) for s in SPLITS for c in CLASS_NAMES}


def test_prepare_split_sizes_no_overlap_and_determinism(tmp_path):
    raw = fake_raw(tmp_path / "raw")
    counts = prepare_split(raw, tmp_path / "a", val_per_class=3, train_per_class=6, test_per_class=4, seed=0)
    assert counts == {"train": 12, "validation": 6, "test": 8}
    a = listing(tmp_path / "a")
    assert [len(a[f"{s}/{c}"]) for s in SPLITS for c in CLASS_NAMES] == [6, 6, 3, 3, 4, 4]
    for cls in CLASS_NAMES:
        assert not set(a[f"train/{cls}"]) & set(a[f"validation/{cls}"])
        assert all(n.startswith(f"traindata_{cls}") for n in a[f"train/{cls}"] + a[f"validation/{cls}"])
        assert all(n.startswith(f"testdata_{cls}") for n in a[f"test/{cls}"])
    prepare_split(raw, tmp_path / "b", val_per_class=3, train_per_class=6, test_per_class=4, seed=0)
    prepare_split(raw, tmp_path / "c", val_per_class=3, train_per_class=6, test_per_class=4, seed=1)
    assert listing(tmp_path / "b") == a and listing(tmp_path / "c") != a
    assert check_dataset(tmp_path / "a").errors == []


def test_prepare_split_accepts_one_level_less_nesting(tmp_path):
    raw = fake_raw(tmp_path / "raw", nested=False)
    assert prepare_split(raw, tmp_path / "out", 2, 3, 2) == {"train": 6, "validation": 4, "test": 4}


def test_prepare_split_errors(tmp_path):
    raw = fake_raw(tmp_path / "raw")
    with pytest.raises(DataError, match=r"traindata/women: found 10 images, need 11 \(validation 3 \+ train 8\)"):
        prepare_split(raw, tmp_path / "out", val_per_class=3, train_per_class=8, test_per_class=2)
    with pytest.raises(DataError, match=r"testdata/men: found 5 images, need 6 \(test 6\)"):
        prepare_split(raw, tmp_path / "out", val_per_class=1, train_per_class=1, test_per_class=6)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="expected traindata/traindata"):
        prepare_split(tmp_path / "raw" / "testdata", tmp_path / "out")
    runner = CliRunner()
    res = runner.invoke(main, ["data", "prepare", "--raw", str(tmp_path / "missing"), "--dest", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error: " in res.stderr and "missing: no such folder" in res.stderr
    res = runner.invoke(main, ["data", "prepare", "--raw", str(raw), "--dest", str(tmp_path / "o"),
                               "--val-per-class", "2", "--train-per-class", "3", "--test-per-class", "2"])
    assert res.exit_code == 0 and "train 6, validation 4, test 4" in res.output


# ------------------------------------------------------------------------------------ archives
def make_zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
            else:
                tf.addfile(m)
    return path


def test_safe_extract_good_zip_and_tar(tmp_path):
    z = make_zip(tmp_path / "ok.zip", [("traindata/", b"", None), ("traindata/men/a.jpg", b"abc", 0o100644)])
    safe_extract(z, tmp_path / "z")
    assert (tmp_path / "z" / "traindata" / "men" / "a.jpg").read_bytes() == b"abc"
    t = make_tar(tmp_path / "ok.tar", [("testdata/women/b.png", b"xyz")])
    safe_extract(t, tmp_path / "t")
    assert (tmp_path / "t" / "testdata" / "women" / "b.png").read_bytes() == b"xyz"


@pytest.mark.parametrize("name,mode,why", [
    ("../evil.txt", None, "'..'"),
    ("ok/../../evil.txt", None, "'..'"),
    ("/abs/evil.txt", None, "absolute"),
    ("link", stat.S_IFLNK | 0o777, "symbolic link"),
    ("dev", stat.S_IFCHR | 0o644, "special file"),
])
def test_safe_extract_refuses_unsafe_zip_members_before_writing(tmp_path, name, mode, why):
    z = make_zip(tmp_path / "bad.zip", [("first.txt", b"written?", None), (name, b"/etc/passwd", mode)])
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=f"refusing member {name!r}.*{why}") as err:
        safe_extract(z, dest)
    assert str(z) in str(err.value)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()


def tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("member,why", [
    (("../evil.txt", b"x"), "'..'"),
    (("/abs/evil.txt", b"x"), "absolute"),
    (tar_member("link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    (tar_member("hard", tarfile.LNKTYPE, "../outside"), "hard link"),
    (tar_member("dev", tarfile.CHRTYPE), "special file"),
    (tar_member("fifo", tarfile.FIFOTYPE), "special file"),
])
def test_safe_extract_refuses_unsafe_tar_members_before_writing(tmp_path, member, why):
    t = make_tar(tmp_path / "bad.tar", [("first.txt", b"written?"), member])
    dest = tmp_path / "out"
    name = member[0] if isinstance(member, tuple) else member.name
    with pytest.raises(DataError, match=f"refusing member {name!r}.*{why}"):
        safe_extract(t, dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()


def test_safe_extract_rejects_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a zip or tar archive"):
        safe_extract(tmp_path / "notes.txt", tmp_path / "out")
    with pytest.raises(DataError, match="no such archive"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "out")


# ------------------------------------------------------------------------------------ kaggle
@pytest.fixture
def no_kaggle_credentials(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    return home


def test_missing_kaggle_credentials_say_how_to_provide_them(no_kaggle_credentials, tmp_path):
    with pytest.raises(DataError, match=r"no Kaggle credentials: save kaggle.json .* or set KAGGLE_USERNAME and KAGGLE_KEY"):
        download_kaggle(tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    res = CliRunner().invoke(main, ["data", "download", "--dest", str(tmp_path / "raw")])
    assert res.exit_code == 2 and res.stderr.startswith("error: no Kaggle credentials")


def test_kaggle_json_checks_never_show_the_key(no_kaggle_credentials, monkeypatch):
    folder = no_kaggle_credentials / ".kaggle"
    folder.mkdir()
    config = folder / "kaggle.json"
    config.write_text('{"username": "someone", "key": "SECRET123"}')
    config.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by other users; run `chmod 600"):
        assert kaggle_credentials_source() == str(config)
    config.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kaggle_credentials_source()
    config.write_text('{"username": "someone"')
    with pytest.raises(DataError, match="kaggle.json: not readable JSON") as err:
        kaggle_credentials_source()
    assert "SECRET" not in str(err.value)
    config.write_text('{"user": "someone", "key": "SECRET123"}')
    with pytest.raises(DataError, match='expected the keys "username" and "key"') as err:
        kaggle_credentials_source()
    assert "SECRET" not in str(err.value)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "SECRET123")
    assert kaggle_credentials_source() == "KAGGLE_USERNAME/KAGGLE_KEY"


def test_kaggle_config_dir_env_is_honoured(no_kaggle_credentials, tmp_path, monkeypatch):
    other = tmp_path / "kcfg"
    other.mkdir()
    (other / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    (other / "kaggle.json").chmod(0o600)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(other))
    assert kaggle_credentials_source() == str(other / "kaggle.json")


# ------------------------------------------------------------------------------------ CLI synth
def test_cli_synth_writes_then_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    dest = tmp_path / "s"
    res = runner.invoke(main, ["data", "synth", "--dest", str(dest), "--per-class", "4", "--size", "32"])
    assert res.exit_code == 0 and "train 8, validation 4, test 4" in res.output
    again = runner.invoke(main, ["data", "synth", "--dest", str(dest), "--per-class", "4", "--size", "32"])
    assert again.exit_code == 2
    assert again.stderr.strip() == f"error: {dest}: already exists and is not empty; remove it or choose another destination"


@pytest.fixture
def fake_kaggle(monkeypatch):
    """Stand-ins for the kaggle modules: no real import (it authenticates), no network."""
    import sys
    import types

    calls: list[dict] = []

    class FakeApi:
        fail: Exception | None = None

        def authenticate(self):
            pass

        def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=()):
            calls.append({"dataset": dataset, "path": path, "unzip": unzip})
            if FakeApi.fail:
                raise FakeApi.fail
            make_zip(Path(path) / "menwomen-classification.zip",
                     [("traindata/traindata/men/a.jpg", b"abc", 0o100644)])

    extended = types.ModuleType("kaggle.api.kaggle_api_extended")
    extended.KaggleApi = FakeApi
    monkeypatch.setitem(sys.modules, "kaggle", types.ModuleType("kaggle"))
    monkeypatch.setitem(sys.modules, "kaggle.api", types.ModuleType("kaggle.api"))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", extended)
    return FakeApi, calls


def test_download_extracts_the_zip_safely_and_cleans_up(no_kaggle_credentials, fake_kaggle, tmp_path, monkeypatch):
    api, calls = fake_kaggle
    folder = no_kaggle_credentials / ".kaggle"
    folder.mkdir()
    (folder / "kaggle.json").write_text('{"username": "someone", "key": "SECRET123"}')
    (folder / "kaggle.json").chmod(0o644)
    dest = tmp_path / "raw"
    res = CliRunner().invoke(main, ["data", "download", "--dest", str(dest)])
    assert res.exit_code == 0, res.output
    assert calls == [{"dataset": "saadpd/menwomen-classification", "path": calls[0]["path"], "unzip": False}]
    assert (dest / "traindata" / "traindata" / "men" / "a.jpg").read_bytes() == b"abc"
    assert sorted(p.name for p in dest.iterdir()) == ["traindata"]  # zip and temp folder removed
    assert "warning: " in res.stderr and "chmod 600" in res.stderr
    assert "SECRET" not in res.output

    api.fail = ConnectionError("Failed to resolve www.kaggle.com")
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "SECRET123")
    with pytest.raises(DataError, match="download of Kaggle dataset 'saadpd/menwomen-classification' failed: "
                                        "ConnectionError: Failed to resolve") as err:
        download_kaggle(tmp_path / "raw2")
    assert "SECRET" not in str(err.value)
    assert not (tmp_path / "raw2").exists()


def test_a_synthetic_folder_made_with_another_spec_is_not_silently_reused(tmp_path):
    from gic.config import DataConfig
    from gic.data import ensure_data

    cfg = DataConfig(source="synthetic", dir=tmp_path / "s", image_size=32,
                     synthetic={"per_class": 4, "size": 32, "seed": 0})
    assert ensure_data(cfg) == tmp_path / "s"
    assert ensure_data(cfg) == tmp_path / "s"  # same spec: reused
    other = cfg.model_copy(update={"synthetic": cfg.synthetic.model_copy(update={"per_class": 8})})
    with pytest.raises(DataError, match=r"synthetic data made with per_class 4 \(config: 8\)"):
        ensure_data(other)
