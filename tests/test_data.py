"""sreval.data: dataset layouts, name resolution, the embedded default set, crops."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from sreval.data import Sample, assets_dir, crop_center, downscale, load_dataset
from sreval.errors import ConfigError, DataError
from sreval.io import read_image, write_image
from sreval.report import data_info
from sreval.sweeps import write_crops

RNG = np.random.default_rng(1)


def _write_random(path: Path, h: int, w: int) -> np.ndarray:
    img = RNG.random((h, w, 3)).astype(np.float32)
    write_image(path, img)
    return read_image(path)


# ---------------------------------------------------------------------------
# Real benchmark folders (EDSR layout)
# ---------------------------------------------------------------------------


def test_set5_hr_lr_layout(assets: Path) -> None:
    samples = load_dataset(assets / "datasets" / "Set5", 4)
    assert [s.name for s in samples] == ["baby", "bird", "butterfly", "head", "woman"]
    for s in samples:
        assert s.hr is not None and s.lr.dtype == np.float32
        assert s.lr.shape == (s.hr.shape[0] // 4, s.hr.shape[1] // 4, 3)
    lr_file = read_image(assets / "datasets/Set5/LR_bicubic/X4/birdx4.png")
    np.testing.assert_array_equal(samples[1].lr, lr_file)


def test_name_resolution(assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SREVAL_DATA", raising=False)
    by_root = load_dataset("Set5", 4, data_root=assets / "datasets", limit=2)
    assert [s.name for s in by_root] == ["baby", "bird"]
    monkeypatch.setenv("SREVAL_ASSETS", str(assets))
    assert [s.name for s in load_dataset("set5", 4, limit=1)] == ["baby"]  # case-insensitive
    monkeypatch.setenv("SREVAL_DATA", str(assets / "datasets"))
    monkeypatch.setenv("SREVAL_ASSETS", "/nonexistent")
    assert len(load_dataset("Set14", 4, limit=3)) == 3


def test_unknown_name_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("SREVAL_ASSETS", str(tmp_path / "assets"))
    with pytest.raises(DataError) as info:
        load_dataset("NoSuchSet", 4, data_root=tmp_path / "arg")
    message = str(info.value)
    for where in ("arg", "env", "assets/datasets"):
        assert str(tmp_path / where / "NoSuchSet") in message


def test_assets_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SREVAL_ASSETS", str(tmp_path))
    assert assets_dir() == tmp_path
    monkeypatch.delenv("SREVAL_ASSETS")
    assert assets_dir() == (Path.cwd() / "../shared/assets").absolute()


# ---------------------------------------------------------------------------
# Synthetic layouts
# ---------------------------------------------------------------------------


def test_plain_hr_folder_crops_and_makes_lr(tmp_path: Path) -> None:
    hr_b = _write_random(tmp_path / "b.png", 37, 50)
    _write_random(tmp_path / "a.png", 16, 16)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    samples = load_dataset(tmp_path, 4)
    assert [s.name for s in samples] == ["a", "b"]
    b = samples[1]
    assert b.hr is not None and b.hr.shape == (36, 48, 3)
    np.testing.assert_array_equal(b.hr, hr_b[:36, :48])  # top-left crop
    assert b.lr.shape == (9, 12, 3)
    np.testing.assert_array_equal(b.lr, downscale(b.hr, 4))
    np.testing.assert_array_equal(b.lr * 255, np.round(b.lr * 255))  # on the 8-bit grid


def test_hr_subfolder_with_and_without_lr_files(tmp_path: Path) -> None:
    _write_random(tmp_path / "HR" / "x.png", 16, 12)
    _write_random(tmp_path / "HR" / "y.png", 8, 8)
    made = load_dataset(tmp_path, 2)
    assert made[0].lr.shape == (8, 6, 3)
    lr_x = _write_random(tmp_path / "LR_bicubic" / "X2" / "xx2.png", 8, 6)
    with pytest.warns(UserWarning, match="no LR file for y"):
        mixed = load_dataset(tmp_path, 2)
    np.testing.assert_array_equal(mixed[0].lr, lr_x)
    # another scale's LR folder is absent: made silently
    assert load_dataset(tmp_path, 4)[0].lr.shape == (4, 3, 3)


def test_mismatched_lr_size(tmp_path: Path) -> None:
    _write_random(tmp_path / "HR" / "x.png", 16, 12)
    _write_random(tmp_path / "LR_bicubic" / "X4" / "xx4.png", 5, 3)
    with pytest.raises(DataError, match=r"xx4.png: LR size 3x5 .*\(12x16 after crop\) / 4 = 3x4"):
        load_dataset(tmp_path, 4)


def test_lr_only_layouts(tmp_path: Path) -> None:
    lr = _write_random(tmp_path / "set" / "LR" / "p.png", 10, 11)
    samples = load_dataset(tmp_path / "set", 4)
    assert len(samples) == 1 and samples[0].hr is None
    np.testing.assert_array_equal(samples[0].lr, lr)
    flat = load_dataset(tmp_path / "set" / "LR", 4, lr_only=True)
    assert flat[0].hr is None and flat[0].lr.shape == (10, 11, 3)


def test_single_file(tmp_path: Path) -> None:
    _write_random(tmp_path / "one.png", 20, 24)
    (s,) = load_dataset(tmp_path / "one.png", 4)
    assert s.name == "one" and s.lr.shape == (5, 6, 3)


def test_empty_and_imageless_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images in"):
        load_dataset(tmp_path, 4)
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / "HR").mkdir()
    with pytest.raises(DataError, match=f"no images in {tmp_path / 'HR'}"):
        load_dataset(tmp_path, 4)


def test_limit_and_bad_options(tmp_path: Path) -> None:
    for name in ("c", "a", "b"):
        _write_random(tmp_path / f"{name}.png", 8, 8)
    assert [s.name for s in load_dataset(tmp_path, 2, limit=2)] == ["a", "b"]
    with pytest.raises(ConfigError):
        load_dataset(tmp_path, 0)
    with pytest.raises(ConfigError):
        load_dataset(tmp_path, 2, limit=0)


def test_image_smaller_than_scale(tmp_path: Path) -> None:
    _write_random(tmp_path / "tiny.png", 3, 9)
    with pytest.raises(DataError, match="tiny.png.*smaller than scale 4"):
        load_dataset(tmp_path, 4)


# ---------------------------------------------------------------------------
# Embedded default set
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_default_set(scale: int) -> None:
    samples = load_dataset("default", scale)
    assert [s.name for s in samples] == ["astronaut", "chelsea", "coffee", "rocket"]
    for s in samples:
        assert s.hr is not None and max(s.hr.shape[:2]) <= 256
        assert s.hr.shape[0] % scale == 0 and s.hr.shape[1] % scale == 0
        assert s.lr.shape == (s.hr.shape[0] // scale, s.hr.shape[1] // scale, 3)
        assert 0.0 <= s.hr.min() and s.hr.max() <= 1.0 and s.hr.std() > 0.05
    assert len(load_dataset("embedded", 4, limit=2)) == 2


# ---------------------------------------------------------------------------
# Sample and crops
# ---------------------------------------------------------------------------


def test_sample_is_frozen() -> None:
    s = Sample("x", np.zeros((2, 2, 3), np.float32), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "y"  # type: ignore[misc]


def test_crop_center() -> None:
    img = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6, 8, 3)
    np.testing.assert_array_equal(crop_center(img, 2, 4), img[2:4, 2:6])
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    torch.testing.assert_close(crop_center(t, 2, 4), t[..., 2:4, 2:6])
    with pytest.raises(ConfigError, match="crop 7x4"):
        crop_center(img, 7, 4)


@pytest.mark.parametrize("scale, made", [(4, False), (2, True), (3, True)])
def test_set5_lr_read_at_x4_made_at_x2_x3(assets: Path, tmp_path: Path, scale: int, made: bool) -> None:
    """Set5 ships x4 LR images only: x2 and x3 LR are generated (MATLAB-exact), and the report
    says which it was; a sweep's crops of generated LR keep counting as generated."""
    samples = load_dataset(assets / "datasets" / "Set5", scale)
    assert all(s.lr_made is made for s in samples)
    info = data_info("Set5", samples)
    assert info["lr"] == ("generated" if made else "read") and ("lr_note" in info) is made
    if made:
        hr = samples[0].hr
        assert "MATLAB" in info["lr_note"] and hr is not None
        assert np.array_equal(samples[0].lr, downscale(hr, scale))
    write_crops(samples[:2], scale, 12, tmp_path / "crops")
    again = load_dataset(tmp_path / "crops", scale)
    assert all(s.lr_made is made for s in again) and data_info("crops", again)["lr"] == info["lr"]
