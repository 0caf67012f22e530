"""PSNR and SSIM as SR papers compute them (MATLAB rgb2ycbcr Y channel, 0..255 scale).

Inputs: numpy HxWx3 (or HxW gray) or torch CHW / 1xCxHxW, float in [0, 1]; a batch (torch
NxCxHxW or numpy NxHxWxC with N > 1) gives a list of N values, one per image (the paper's
numbers are means of per-image values). Computation is in float64 on the CPU; results are
plain floats.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sreval.errors import ConfigError, DataError
from sreval.io import rgb_to_y

__all__ = ["psnr", "ssim"]

ImageLike = np.ndarray | torch.Tensor

# Wang et al. 2004 / MATLAB ssim settings used by SR papers.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PEAK = 255.0


def psnr(
    a: ImageLike,
    b: ImageLike,
    *,
    y: bool = True,
    shave: int = 0,
    mask: np.ndarray | None = None,
) -> float | list[float]:
    """PSNR in dB with peak 1.0 (255 in 8-bit units); `math.inf` for identical images.

    y: on the MATLAB rgb2ycbcr Y channel (SR-paper convention), else on RGB.
    shave: pixels dropped at every border. mask: HxW bool of the full image, True for the
    pixels to include (e.g. outside an attacked region); combined with `shave`.
    """
    if _is_batch(a) or _is_batch(b):
        return [psnr(ai, bi, y=y, shave=shave, mask=mask) for ai, bi in _batch_pairs(a, b)]  # type: ignore[misc]
    x, z = _channels(_pair(a, b), y)
    keep = _selection(x.shape[:2], shave, mask)
    diff = x[keep] - z[keep]
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(PEAK * PEAK / mse)


def ssim(a: ImageLike, b: ImageLike, *, shave: int = 0, y: bool = True) -> float | list[float]:
    """Mean SSIM (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, L 255) over 'valid' windows.

    On the Y channel by default (SR-paper convention); y=False averages the RGB channels.
    Same value as skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255).
    """
    if _is_batch(a) or _is_batch(b):
        return [ssim(ai, bi, shave=shave, y=y) for ai, bi in _batch_pairs(a, b)]  # type: ignore[misc]
    x, z = _channels(_pair(a, b), y)
    h, w = x.shape[:2]
    _check_shave(shave, h, w)
    x, z = x[shave : h - shave, shave : w - shave], z[shave : h - shave, shave : w - shave]
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise DataError(
            f"ssim: image {x.shape[1]}x{x.shape[0]} (after shave) is smaller than "
            f"the {SSIM_WINDOW}-pixel window"
        )
    if x.ndim == 2:
        return _ssim_plane(x, z)
    return float(np.mean([_ssim_plane(x[..., c], z[..., c]) for c in range(x.shape[2])]))


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _is_batch(img: ImageLike) -> bool:
    return img.ndim == 4 and img.shape[0] > 1


def _batch_pairs(a: ImageLike, b: ImageLike) -> list[tuple[ImageLike, ImageLike]]:
    if a.ndim != 4 or b.ndim != 4 or a.shape[0] != b.shape[0]:
        raise DataError(f"metrics: a batch needs two batches of one size, got shapes {tuple(a.shape)} "
                        f"and {tuple(b.shape)}")
    return list(zip(a, b))


def _as_hwc(img: ImageLike) -> np.ndarray:
    """float64 HxWx3 numpy from numpy HWC/HW or torch CHW/1xCxHxW/HW; gray is replicated."""
    if isinstance(img, torch.Tensor):
        t = img.detach().to("cpu", torch.float64)
        if t.dim() == 4:
            t = t[0]  # one image (batches are split before)
        arr = t.permute(1, 2, 0).numpy() if t.dim() == 3 else t.numpy()
    else:
        arr = np.asarray(img, dtype=np.float64)
        arr = arr[0] if arr.ndim == 4 else arr
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ConfigError(f"metrics expect an RGB or gray image, got shape {tuple(arr.shape)}")
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def _pair(a: ImageLike, b: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    x, z = _as_hwc(a), _as_hwc(b)
    if x.shape != z.shape:
        raise DataError(
            f"metrics: image sizes differ: {x.shape[1]}x{x.shape[0]} vs {z.shape[1]}x{z.shape[0]}"
        )
    return x, z


def _channels(pair: tuple[np.ndarray, np.ndarray], y: bool) -> tuple[np.ndarray, np.ndarray]:
    """0..255 planes: HxW Y (MATLAB rgb2ycbcr) or HxWx3 RGB."""
    if y:
        return rgb_to_y(pair[0]) * PEAK, rgb_to_y(pair[1]) * PEAK
    return pair[0] * PEAK, pair[1] * PEAK


def _check_shave(shave: int, h: int, w: int) -> None:
    if shave < 0 or 2 * shave >= min(h, w):
        raise ConfigError(f"shave {shave} is invalid for an image of {w}x{h}")


def _selection(hw: tuple[int, int], shave: int, mask: np.ndarray | None) -> np.ndarray:
    """HxW bool of the pixels that count: inside the shaved border and in the mask."""
    h, w = hw
    _check_shave(shave, h, w)
    keep = np.zeros((h, w), dtype=bool)
    keep[shave : h - shave, shave : w - shave] = True
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (h, w):
            raise DataError(f"psnr: mask shape {m.shape} does not match image {h}x{w}")
        keep &= m.astype(bool)
    if not keep.any():
        raise DataError("psnr: the mask selects no pixels")
    return keep


def _gaussian_window() -> torch.Tensor:
    r = SSIM_WINDOW // 2
    g = np.exp(-(np.arange(-r, r + 1, dtype=np.float64) ** 2) / (2.0 * SSIM_SIGMA**2))
    return torch.from_numpy(g / g.sum())


def _filter_valid(plane: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering keeping only full windows ('valid', as MATLAB's filter2)."""
    x = plane[None, None]
    x = torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1))
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1))
    return x[0, 0]


def _ssim_plane(x: np.ndarray, z: np.ndarray) -> float:
    g = _gaussian_window()
    a, b = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(z))
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float((num / den).mean())
