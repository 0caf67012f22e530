"""sreval.metrics: PSNR / SSIM with the SR-paper conventions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from sreval.data import load_dataset
from sreval.errors import ConfigError, DataError
from sreval.io import imresize, quantize, rgb_to_y
from sreval.metrics import psnr, ssim

RNG = np.random.default_rng(2)


def _img(h: int = 24, w: int = 20) -> np.ndarray:
    return (RNG.random((h, w, 3)) * 0.8 + 0.1).astype(np.float32)


def test_psnr_constant_offset_rgb_and_y() -> None:
    a = _img()
    b = a + np.float32(1 / 255)
    assert psnr(a, b, y=False) == pytest.approx(20 * math.log10(255), abs=1e-3)  # 48.13 dB
    # Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]): a grey step of 1/255
    # moves Y by 219/255 grey levels.
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / (219 / 255)), abs=1e-3)


def test_psnr_identical_is_inf() -> None:
    a = _img()
    assert psnr(a, a) == math.inf
    assert psnr(a, a.copy(), y=False) == math.inf


def test_psnr_shave_removes_borders() -> None:
    a = _img()
    b = a.copy()
    b[:2] = 0.0
    b[:, -2:] = 1.0
    assert psnr(a, b, shave=1) < 30
    assert psnr(a, b, shave=2) == math.inf
    with pytest.raises(ConfigError):
        psnr(a, b, shave=10)


def test_psnr_mask_selects_pixels() -> None:
    a = _img()
    b = a.copy()
    b[8:16, 5:15] += 0.3  # the "attacked" region
    outside = np.ones(a.shape[:2], dtype=bool)
    outside[8:16, 5:15] = False
    assert psnr(a, b, mask=outside) == math.inf
    b[0, 0] += 1 / 255
    # one pixel of 1/255 among the selected ones, RGB on the selected pixels only
    n = int(outside.sum()) * 3
    want = 10 * math.log10(255**2 / ((1 / 255 * 255) ** 2 * 3 / n))
    assert psnr(a, b, mask=outside, y=False) == pytest.approx(want, abs=1e-3)
    with pytest.raises(DataError):
        psnr(a, b, mask=np.zeros(a.shape[:2], dtype=bool))
    with pytest.raises(DataError):
        psnr(a, b, mask=np.ones((3, 3), dtype=bool))


def test_psnr_accepts_torch_layouts() -> None:
    a, b = _img(), _img()
    ref = psnr(a, b, shave=2)
    ta = torch.from_numpy(a).permute(2, 0, 1)
    tb = torch.from_numpy(b).permute(2, 0, 1)
    assert psnr(ta, tb, shave=2) == pytest.approx(ref, abs=1e-9)
    assert psnr(ta[None], b, shave=2) == pytest.approx(ref, abs=1e-9)
    # a batch: one value per image, torch NCHW and numpy NHWC alike
    assert psnr(torch.stack([ta, ta]), torch.stack([tb, ta]), shave=2) == [pytest.approx(ref, abs=1e-9), math.inf]
    assert psnr(np.stack([a, a]), np.stack([b, b]), shave=2) == [pytest.approx(ref, abs=1e-9)] * 2
    assert ssim(np.stack([a, a]), np.stack([a, b])) == [pytest.approx(1.0), pytest.approx(ssim(a, b))]
    with pytest.raises(DataError, match="two batches of one size"):
        psnr(torch.stack([ta, ta]), tb)
    with pytest.raises(DataError, match="sizes differ"):
        psnr(a, b[:-1])


def test_ssim_identical_and_noisy() -> None:
    a = _img(32, 32)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(a + RNG.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    assert ssim(a, noisy) < 0.99
    with pytest.raises(DataError, match="window"):
        ssim(a, a, shave=11)


def test_ssim_hand_computed_constant_images() -> None:
    # Constant images: variances are 0, so SSIM = (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1).
    a = np.full((16, 16, 3), 0.2, np.float32)
    b = np.full((16, 16, 3), 0.6, np.float32)
    mu1, mu2 = 16 + 219 * 0.2, 16 + 219 * 0.6
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1), rel=1e-6)


def test_ssim_matches_skimage(assets: Path) -> None:
    hr = load_dataset(assets / "datasets" / "Set5", 4, limit=3)[2].hr  # butterfly
    assert hr is not None
    sr = quantize(imresize(imresize(hr, 0.25), 4))
    want = structural_similarity(
        rgb_to_y(sr.astype(np.float64)) * 255,
        rgb_to_y(hr.astype(np.float64)) * 255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(sr, hr) == pytest.approx(want, abs=1e-6)


def test_bicubic_set5_matches_published_psnr(assets: Path) -> None:
    # End-to-end check of imresize (x4 up) + Y PSNR + shave: MATLAB bicubic on Set5 x4 is
    # 28.42 dB in the literature (DESIGN.md); we measure 28.43.
    samples = load_dataset(assets / "datasets" / "Set5", 4)
    values = [psnr(quantize(imresize(s.lr, 4)), s.hr, shave=4) for s in samples]
    assert float(np.mean(values)) == pytest.approx(28.42, abs=0.03)
