"""Image I/O, 8-bit quantisation, MATLAB-compatible bicubic resizing and BT.601 YCbCr.

Library boundary: float32 RGB in [0, 1]; numpy arrays are HxWx3, torch tensors NCHW.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import warnings
from pathlib import Path
from collections.abc import Iterator
from typing import TypeVar

# Decompression bombs: every image's header is read first (read_image_size) and an image
# above max_pixels() is refused before anything is decoded. OpenCV's own limit (read once,
# when cv2 is imported, from OPENCV_IO_MAX_IMAGE_PIXELS; default 2**30) is only a backstop.
DECODE_BYTES_PER_PIXEL = 40  # peak of decoding and converting to float32 RGB
HELD_BYTES_PER_PIXEL = 16  # a sample kept for the run: float32 RGB, and its LR when made here
DEFAULT_MAX_PIXELS = 25_000_000  # 5000 x 5000; SREVAL_MAX_PIXELS or `sreval --max-pixels` raise it
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 28))

import cv2  # noqa: E402
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sreval import memory
from sreval.errors import ConfigError, DataError
from sreval.files import atomic_write

__all__ = [
    "read_image",
    "write_image",
    "quantize",
    "resize_matrix",
    "imresize_torch",
    "imresize",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "rgb_to_y",
    "to_ycc",
    "from_ycc",
    "env_number",
]

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

# ---------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------


def env_number(name: str, kind: type[int] | type[float], unit: str, *,
               infinite_is_none: bool = False) -> int | float | None:
    """A positive number from the environment variable `name` (None when unset or empty; with
    `infinite_is_none`, also for 'inf': no limit); a bad value is a one-line ConfigError naming
    the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        raise ConfigError(f"{name} must be a number of {unit}, got {text!r}") from None
    if infinite_is_none and value == math.inf:
        return None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number of {unit} > 0, got {text}")
    return value


def max_pixels() -> int:
    """The largest image (width x height) sreval decodes: SREVAL_MAX_PIXELS, else the default."""
    value = env_number("SREVAL_MAX_PIXELS", int, "pixels")
    return DEFAULT_MAX_PIXELS if value is None else int(value)


def read_image_size(path: Path, raw: np.ndarray) -> tuple[int, int]:
    """(width, height) from the file's header alone (Pillow reads headers lazily, decoding
    nothing), so that a bomb is refused before it takes memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: we decide below
            Image.MAX_IMAGE_PIXELS = None
            with Image.open(io.BytesIO(raw.tobytes())) as im:
                return int(im.size[0]), int(im.size[1])
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: not a decodable image (corrupt, or a format whose size "
                        f"sreval cannot read before decoding; PNG, JPEG, BMP, TIFF, WebP, PPM are)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: unreadable header ({str(exc)[:120]})") from None


def read_image(path: str | Path, ledger: memory.Ledger | None = None) -> np.ndarray:
    """Read an image file as float32 HxWx3 RGB in [0, 1].

    8-bit images are divided by 255, 16-bit ones by 65535; grayscale is replicated to RGB;
    an alpha channel is dropped with a warning. An image whose header declares more than
    max_pixels() pixels is refused before decoding (peak memory of a read: about 40 bytes
    per pixel, so 1 GB at the default limit); that peak is checked against the memory budget,
    with what `ledger` holds already (the dataset's earlier images) where one is given.
    """
    path = Path(path)
    raw = _read_bytes(path)
    w, h = read_image_size(path, raw)
    limit = max_pixels()
    if w * h > limit:
        raise DataError(f"cannot read image {path}: {w}x{h} is {w * h:,} pixels, above the limit of {limit:,} "
                        f"(raise it with --max-pixels or SREVAL_MAX_PIXELS)")
    (ledger or memory.Ledger(f"decoding image {path} ({w}x{h})")).add(
        HELD_BYTES_PER_PIXEL * w * h, transient=DECODE_BYTES_PER_PIXEL * w * h)
    # np.fromfile + imdecode instead of cv2.imread: imread cannot open non-ASCII paths on
    # some platforms and gives no reason when it fails.
    try:
        with _quiet_stderr():
            img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. larger than CV_IO_MAX_IMAGE_PIXELS
        msg = str(exc).strip().splitlines()[-1][:200]
        raise DataError(f"cannot read image {path}: refused by the decoder ({msg})") from None
    if img is None:
        raise DataError(f"cannot read image {path}: not a decodable image (corrupt or unsupported)")
    if img.size == 0:
        raise DataError(f"cannot read image {path}: zero-size image {img.shape}")
    return _to_float_rgb(img, path)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence fd 2 while a C library decodes: libpng prints its own errors there ('libpng
    error: ...') besides returning failure, which would break our one-line error reports."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _read_bytes(path: Path) -> np.ndarray:
    """The file's bytes as a uint8 array, with DataError for every way that can fail."""
    if not path.exists():
        raise DataError(f"cannot read image {path}: no such file")
    if not path.is_file():
        raise DataError(f"cannot read image {path}: not a regular file")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if raw.size == 0:
        raise DataError(f"cannot read image {path}: empty file")
    return raw


def _to_float_rgb(img: np.ndarray, path: Path) -> np.ndarray:
    """Decoded cv2 array (any channel count, uint8/uint16) -> float32 RGB HxWx3."""
    if img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        out = img.astype(np.float32) / 65535.0
    else:
        raise DataError(f"cannot read image {path}: unsupported pixel type {img.dtype}")
    if out.ndim == 2:
        out = out[:, :, None]
    channels = out.shape[2]
    if channels in (2, 4):
        warnings.warn(f"{path}: alpha channel dropped", UserWarning, stacklevel=3)
        out = out[:, :, : channels - 1]
    if out.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(out, 3, axis=2))
    if out.shape[2] == 3:
        return np.ascontiguousarray(out[:, :, ::-1])  # cv2 decodes to BGR
    raise DataError(f"cannot read image {path}: unsupported channel count {channels}")


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write float RGB HxWx3 (or HxW gray) in [0, 1] as an 8-bit image, atomically. The
    format follows the suffix (PNG when there is none). Parent folders are created."""
    path = Path(path)
    atomic_write(path, encode_image(img, path.suffix.lower() or ".png", str(path)))


def encode_image(img: np.ndarray, suffix: str = ".png", name: str = "image") -> bytes:
    """Float RGB HxWx3 (or HxW gray) in [0, 1] as the bytes of an 8-bit image file; values
    are clipped to [0, 1] (NaN -> 0) and rounded."""
    arr = np.asarray(img)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or arr.size == 0:
        raise DataError(f"cannot write image {name}: expected HxWx3 or HxW, got shape {arr.shape}")
    u8 = _to_uint8(arr)
    if u8.ndim == 3:
        u8 = np.ascontiguousarray(u8[:, :, ::-1])  # RGB -> BGR for cv2
    ok, buf = cv2.imencode(suffix, u8)
    if not ok:
        raise DataError(f"cannot write image {name}: cv2 cannot encode {suffix}")
    return buf.tobytes()


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.nan_to_num(arr.astype(np.float64), nan=0.0), 0.0, 1.0)
    return np.floor(clipped * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------
# Quantisation
# ---------------------------------------------------------------------------


def quantize(x: ArrayOrTensor) -> ArrayOrTensor:
    """Clip to [0, 1] and round to the 8-bit grid: round(clip(x) * 255) / 255 (dtype kept).

    Works on numpy arrays and torch tensors. Clipping is part of it because an 8-bit value
    saturates (MATLAB's uint8 conversion does the same; bicubic overshoot on sharp edges
    otherwise lands off the grid). Halves round up, like MATLAB (numpy and torch round
    halves to even). Not differentiable (zero gradient), like any rounding.
    """
    if isinstance(x, torch.Tensor):
        return torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0
    arr = np.asarray(x)
    out = np.floor(np.clip(arr, 0.0, 1.0) * 255.0 + 0.5) / 255.0
    return out.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32)


# ---------------------------------------------------------------------------
# MATLAB-compatible bicubic resize
# ---------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'), support [-2, 2]."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return near + far


@functools.lru_cache(maxsize=64)
def _resize_matrix_np(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense float64 (out_len x in_len) matrix of MATLAB imresize's bicubic contributions."""
    kernel_width = 4.0
    antialias = scale < 1.0
    if antialias:
        # MATLAB widens the kernel by 1/scale when shrinking (a low-pass filter).
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # their position in 1-based input coordinates
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if antialias else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # MATLAB's imresize "replicates end-points": a tap beyond the image edge reads the edge
    # pixel (clamped, not mirrored as BasicSR's port does); several taps may then land on the
    # same input pixel. With per-pass uint8 rounding this reproduces the benchmark LR files
    # bit for bit (tests/test_io.py).
    cols = np.clip(idx.astype(np.int64) - 1, 0, in_len - 1)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(mat, (rows, cols.ravel()), weights.ravel())
    mat.setflags(write=False)  # shared through the cache
    return mat


@functools.lru_cache(maxsize=128)
def _resize_matrix_cached(
    in_len: int, out_len: int, scale: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    mat = torch.from_numpy(_resize_matrix_np(in_len, out_len, scale).copy())
    return mat.to(device=device, dtype=dtype)


def resize_matrix(
    in_len: int,
    out_len: int,
    scale: float,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The (out_len x in_len) matrix W such that W @ signal is MATLAB's bicubic resize.

    `scale` is the resize factor along this axis (< 1 shrinks, with antialiasing). The
    result is cached and shared: do not modify it in place.
    """
    if in_len < 1 or out_len < 1:
        raise ConfigError(f"resize: lengths must be >= 1, got {in_len} -> {out_len}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"resize: scale must be a positive number, got {scale}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return _resize_matrix_cached(int(in_len), int(out_len), float(scale), dev, dtype)


def _out_len(in_len: int, scale: float) -> int:
    # MATLAB: ceil(in * scale). The small tolerance stops float error (e.g. 1/3 * 3n giving
    # n + 1e-15) from adding a pixel.
    return max(1, math.ceil(in_len * scale - 1e-9))


def _plan(
    in_hw: tuple[int, int], scale: float | None, size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Output size and per-axis scale, following MATLAB's imresize rules."""
    if (scale is None) == (size is None):
        raise ConfigError("resize: give exactly one of scale or size")
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"resize: scale must be a positive number, got {scale}")
        return (_out_len(in_hw[0], scale), _out_len(in_hw[1], scale)), (scale, scale)
    assert size is not None
    oh, ow = int(size[0]), int(size[1])
    if oh < 1 or ow < 1:
        raise ConfigError(f"resize: output size must be positive, got {size}")
    return (oh, ow), (oh / in_hw[0], ow / in_hw[1])


def _resize_passes(
    x: torch.Tensor,
    scale: float | None,
    size: tuple[int, int] | None,
    round_each_pass: bool,
) -> torch.Tensor:
    """One separable pass per axis over the last two dims, in MATLAB's order.

    With `round_each_pass`, x must hold 0..255 values (uint8 emulation).
    """
    in_hw = (int(x.shape[-2]), int(x.shape[-1]))
    out_hw, scales = _plan(in_hw, scale, size)
    # MATLAB shrinks the axis with the smallest scale first (stable: rows first on ties).
    # The order only matters when rounding between passes.
    for axis in sorted(range(2), key=lambda a: scales[a]):
        if out_hw[axis] == in_hw[axis] and scales[axis] == 1.0:
            continue  # identity axis: exact copy, as in MATLAB
        mat = resize_matrix(in_hw[axis], out_hw[axis], scales[axis], device=x.device, dtype=x.dtype)
        x = mat @ x if axis == 0 else x @ mat.T
        if round_each_pass:
            x = torch.floor(x.clamp(0.0, 255.0) + 0.5)  # uint8 saturation + MATLAB rounding
    return x


def imresize_torch(
    x: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """MATLAB `imresize(x, scale | [h w], 'bicubic')` on the last two dims (NCHW), differentiable.

    Computed as Wh @ x @ Ww^T in x's dtype on x's device. No rounding or clipping.
    Output size is ceil(in * scale) when `scale` is given; with `size`, the per-axis scale
    is out / in.
    """
    if not torch.is_floating_point(x):
        raise ConfigError(f"imresize_torch: expected a floating-point tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ConfigError(f"imresize_torch: expected at least 2 dims, got shape {tuple(x.shape)}")
    return _resize_passes(x, scale, size, round_each_pass=False)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    *,
    matlab_uint8: bool = False,
) -> np.ndarray:
    """numpy wrapper of `imresize_torch` for HxWxC or HxW arrays; float64 maths, float32 out.

    By default returns unrounded values (callers `quantize`). `matlab_uint8=True` mimics
    MATLAB on a uint8 image exactly: MATLAB stores each separable pass in the input's
    class, so it clips and rounds after the row pass AND after the column pass; the
    result is on the 8-bit grid. Use it to reproduce MATLAB-made LR files (it gets ~10x
    closer to them than a single final rounding).
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ConfigError(f"imresize: expected HxW or HxWxC array, got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    chw = t.permute(2, 0, 1) if arr.ndim == 3 else t
    if matlab_uint8:
        # Work in integer 0..255 units like MATLAB: k/255 is inexact in binary, and that
        # noise flips the exact .5 ties bicubic weights produce.
        u8 = torch.floor(chw.clamp(0.0, 1.0) * 255.0 + 0.5)
        out = _resize_passes(u8, scale, size, round_each_pass=True) / 255.0
    else:
        out = _resize_passes(chw, scale, size, round_each_pass=False)
    out = out.permute(1, 2, 0) if arr.ndim == 3 else out
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


# ---------------------------------------------------------------------------
# MATLAB rgb2ycbcr (BT.601 studio range), in [0, 1] units
# ---------------------------------------------------------------------------

# Rows give Y, Cb, Cr in 0..255 units from R, G, B in [0, 1]; dividing by 255 keeps both
# sides in [0, 1] units (Y in [16, 235] / 255).
_YCC_MATRIX = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
) / 255.0
_YCC_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_YCC_INVERSE = np.linalg.inv(_YCC_MATRIX)


def _apply_color(
    x: ArrayOrTensor, matrix: np.ndarray, pre: np.ndarray, post: np.ndarray
) -> ArrayOrTensor:
    """matrix @ (pixel - pre) + post per pixel; channels last for numpy, at dim -3 for torch."""
    if isinstance(x, torch.Tensor):
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ConfigError(f"colour conversion: expected (..., 3, H, W), got {tuple(x.shape)}")
        m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
        a = torch.as_tensor(pre, dtype=x.dtype, device=x.device).view(3, 1, 1)
        b = torch.as_tensor(post, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return torch.einsum("ij,...jhw->...ihw", m, x - a) + b
    arr = np.asarray(x)
    if arr.ndim < 1 or arr.shape[-1] != 3:
        raise ConfigError(f"colour conversion: expected (..., 3) array, got {arr.shape}")
    out = (arr.astype(np.float64) - pre) @ matrix.T + post
    return out.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32)


def rgb_to_ycbcr(x: ArrayOrTensor) -> ArrayOrTensor:
    """MATLAB `rgb2ycbcr` on [0, 1] RGB -> [0, 1] YCbCr (torch NCHW/CHW or numpy HWC).

    Differentiable for tensors; exact inverse of `ycbcr_to_rgb` (up to float rounding).
    """
    return _apply_color(x, _YCC_MATRIX, np.zeros(3), _YCC_OFFSET)


def ycbcr_to_rgb(x: ArrayOrTensor) -> ArrayOrTensor:
    """Inverse of `rgb_to_ycbcr` (MATLAB `ycbcr2rgb`), no clipping."""
    return _apply_color(x, _YCC_INVERSE, _YCC_OFFSET, np.zeros(3))


# JPEG / OpenCV full-range YCbCr, rows Y, Cb, Cr from R, G, B in [0, 1]; offsets in [0, 1].
_FULL_MATRIX = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_FULL_OFFSET = np.array([0.0, 0.5, 0.5])
_FULL_INVERSE = np.linalg.inv(_FULL_MATRIX)


def to_ycc(x: ArrayOrTensor, color: str) -> ArrayOrTensor:
    """RGB -> the YCbCr flavour of a Y colour convention: 'y' (MATLAB studio range) or 'yfull'
    (JPEG / OpenCV full range)."""
    return rgb_to_ycbcr(x) if color == "y" else _apply_color(x, _FULL_MATRIX, np.zeros(3), _FULL_OFFSET)


def from_ycc(x: ArrayOrTensor, color: str) -> ArrayOrTensor:
    """Inverse of `to_ycc`, no clipping."""
    return ycbcr_to_rgb(x) if color == "y" else _apply_color(x, _FULL_INVERSE, _FULL_OFFSET, np.zeros(3))


def rgb_to_y(x: ArrayOrTensor) -> ArrayOrTensor:
    """Only the Y channel of `rgb_to_ycbcr`: torch (..., 1, H, W), numpy (..., H, W)."""
    if isinstance(x, torch.Tensor):
        return rgb_to_ycbcr(x)[..., :1, :, :]
    return rgb_to_ycbcr(x)[..., 0]
