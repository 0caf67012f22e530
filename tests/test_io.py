"""sreval.io: reading/writing, quantisation, MATLAB bicubic resize, YCbCr."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sreval.errors import ConfigError, DataError
from sreval.io import (
    imresize,
    imresize_torch,
    quantize,
    read_image,
    resize_matrix,
    rgb_to_y,
    rgb_to_ycbcr,
    write_image,
    ycbcr_to_rgb,
)

RNG = np.random.default_rng(0)


def _rand_u8(h: int, w: int, c: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, c), dtype=np.uint8)


# ---------------------------------------------------------------------------
# read_image / write_image
# ---------------------------------------------------------------------------


def test_read_8bit_png_is_rgb_float(tmp_path: Path) -> None:
    bgr = _rand_u8(7, 5, 3)
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    img = read_image(tmp_path / "a.png")
    assert img.dtype == np.float32 and img.shape == (7, 5, 3)
    np.testing.assert_array_equal(img, bgr[:, :, ::-1].astype(np.float32) / 255)


def test_read_16bit(tmp_path: Path) -> None:
    bgr = RNG.integers(0, 65536, size=(4, 6, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), bgr)
    img = read_image(tmp_path / "a16.png")
    np.testing.assert_allclose(img, bgr[:, :, ::-1] / 65535.0, atol=1e-7)


def test_read_gray_replicated(tmp_path: Path) -> None:
    gray = _rand_u8(6, 4, 1)[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    img = read_image(tmp_path / "g.png")
    assert img.shape == (6, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray / np.float32(255))


def test_read_real_gray_asset(assets: Path) -> None:
    img = read_image(assets / "datasets/Set14/HR/bridge.png")
    assert img.shape[2] == 3
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_read_alpha_warns_and_drops(tmp_path: Path) -> None:
    bgra = _rand_u8(5, 5, 4)
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    with pytest.warns(UserWarning, match="rgba.png.*alpha"):
        img = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(img, bgra[:, :, 2::-1] / np.float32(255))


def test_read_jpeg_and_bmp(tmp_path: Path) -> None:
    bgr = np.full((8, 8, 3), (10, 120, 240), dtype=np.uint8)
    for suffix in (".jpg", ".bmp"):
        cv2.imwrite(str(tmp_path / f"x{suffix}"), bgr)
        img = read_image(tmp_path / f"x{suffix}")
        np.testing.assert_allclose(img[4, 4], np.array([240, 120, 10]) / 255, atol=3 / 255)


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"", "empty file"), (b"this is not an image", "not a decodable image")],
)
def test_read_bad_bytes(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"cannot read image .*bad.png: {why}"):
        read_image(path)


def test_read_truncated_png(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".png", _rand_u8(64, 64, 3))
    assert ok
    path = tmp_path / "trunc.png"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(DataError, match="trunc.png"):
        read_image(path)


def test_read_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="not a regular file"):
        read_image(tmp_path)


def test_write_roundtrip_clips_and_creates_dirs(tmp_path: Path) -> None:
    img = RNG.random((9, 7, 3)).astype(np.float32)
    img[0, 0] = (-0.5, 1.5, np.nan)
    path = tmp_path / "deep" / "er" / "out.png"
    write_image(path, img)
    back = read_image(path)
    expected = quantize(np.nan_to_num(img))
    np.testing.assert_array_equal(back, expected)
    assert back[0, 0].tolist() == [0.0, 1.0, 0.0]
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]  # no temp file left


def test_write_rejects_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="x.png"):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 2), np.float32))


# ---------------------------------------------------------------------------
# quantize
# ---------------------------------------------------------------------------


def test_quantize_numpy_and_torch() -> None:
    x = np.array([-0.1, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.2], dtype=np.float32)
    want = np.array([0, 0, 1, 1, 128, 255], dtype=np.float32) / 255
    np.testing.assert_array_equal(quantize(x), want)  # halves up, clipped
    t = quantize(torch.from_numpy(x))
    assert t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), want)


# ---------------------------------------------------------------------------
# MATLAB bicubic
# ---------------------------------------------------------------------------


def test_resize_matrix_hand_computed_row() -> None:
    # MATLAB imresize(1:4, 2): output 1 sits at u = 0.75; cubic(a=-0.5) taps at distances
    # 1.75, 0.75, 0.25, 1.25 -> -0.0234375, 0.2265625, 0.8671875, -0.0703125; input indices
    # -1, 0 are clamped to the edge pixel 1 ("replicating end-points"), NOT mirrored to 2, 1
    # -> row [1.0703125, -0.0703125, 0, 0] (mirroring would give [1.09375, -0.09375, 0, 0]).
    m = resize_matrix(4, 8, 2.0)
    assert m.shape == (8, 4)
    np.testing.assert_allclose(m[0].numpy(), [1.0703125, -0.0703125, 0, 0], atol=1e-12)
    np.testing.assert_allclose(m[-1].numpy(), [0, 0, -0.0703125, 1.0703125], atol=1e-12)
    np.testing.assert_allclose(m.sum(1).numpy(), 1.0, atol=1e-12)
    assert resize_matrix(4, 8, 2.0) is m  # cached


def test_downscale_antialias_weights_are_wide() -> None:
    m = resize_matrix(64, 16, 0.25)
    # kernel widened from 4 to 16 input pixels; an interior row has 16 symmetric taps
    row = m[8].numpy()
    taps = np.flatnonzero(row)
    assert len(taps) == 16
    np.testing.assert_allclose(row[taps], row[taps][::-1], atol=1e-15)
    np.testing.assert_allclose(m.sum(1).numpy(), 1.0, atol=1e-12)


def test_output_size_rules() -> None:
    img = np.zeros((5, 7, 3), np.float32)
    assert imresize(img, 0.5).shape == (3, 4, 3)  # ceil(in * scale)
    assert imresize(img, size=(10, 3)).shape == (10, 3, 3)
    assert imresize(img[..., 0], 2).shape == (10, 14)
    np.testing.assert_array_equal(imresize(img + 0.3, 1.0), img + 0.3)
    with pytest.raises(ConfigError):
        imresize(img)
    with pytest.raises(ConfigError):
        imresize(img, 0.5, size=(2, 2))
    with pytest.raises(ConfigError):
        imresize_torch(torch.zeros(1, 3, 4, 4, dtype=torch.int64), 2)


def test_constant_and_linear_preserved() -> None:
    const = np.full((12, 16, 3), 0.4, np.float32)
    np.testing.assert_allclose(imresize(const, 0.25), 0.4, atol=1e-6)
    np.testing.assert_allclose(imresize(const, 3), 0.4, atol=1e-6)


def _matlab_lr_mismatch(assets: Path, name: str) -> tuple[int, int, int]:
    """(files, values compared, values that differ) between our uint8-emulating imresize of
    every HR image and the MATLAB-made LR file beside it."""
    files = values = differ = 0
    for hr_path in sorted((assets / "datasets" / name / "HR").glob("*.png")):
        hr = read_image(hr_path)
        lr = read_image(assets / "datasets" / name / "LR_bicubic/X4" / f"{hr_path.stem}x4.png")
        ours = imresize(hr, 1 / 4, matlab_uint8=True)
        assert ours.shape == lr.shape, hr_path.name
        a, b = np.rint(ours * 255).astype(np.int16), np.rint(lr * 255).astype(np.int16)
        files, values, differ = files + 1, values + a.size, differ + int((a != b).sum())
    return files, values, differ


@pytest.mark.parametrize("name,n_files", [("Set5", 5), ("Set14", 14), ("BSD100", 100)])
def test_imresize_reproduces_matlab_lr_files_exactly(assets: Path, name: str, n_files: int) -> None:
    # Clamped end-points + rounding after each pass, as MATLAB does on uint8: every value of
    # every LR file (1,252,945 over the three sets) is reproduced, zero tolerance. With
    # mirrored end-points (BasicSR's port) 17.7% of border values differ, by up to 10 levels.
    files, values, differ = _matlab_lr_mismatch(assets, name)
    assert files == n_files
    assert differ == 0, f"{differ} of {values} values differ from MATLAB's LR files"


def test_float_imresize_close_to_matlab_lr_files(assets: Path) -> None:
    # The float path (one rounding at the end, used for differentiable resizes) is within
    # half a grey level of MATLAB on average.
    for hr_path in sorted((assets / "datasets" / "Set5" / "HR").glob("*.png")):
        lr = read_image(assets / "datasets" / "Set5" / "LR_bicubic/X4" / f"{hr_path.stem}x4.png")
        ours = quantize(imresize(read_image(hr_path), 1 / 4))
        assert np.abs(ours.astype(np.float64) - lr).mean() * 255 < 0.5


def test_imresize_torch_matches_numpy_batch_and_dtypes() -> None:
    x = torch.rand(2, 3, 20, 13, dtype=torch.float64)
    out = imresize_torch(x, 0.5)
    assert out.shape == (2, 3, 10, 7) and out.dtype == torch.float64
    ref = imresize(x[1].permute(1, 2, 0).numpy(), 0.5)
    np.testing.assert_allclose(out[1].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    for dtype in (torch.float32, torch.bfloat16):
        low = imresize_torch(x.to(dtype), 0.5)
        assert low.dtype == dtype
        np.testing.assert_allclose(low.double().numpy(), out.numpy(), atol=0.05)


def test_imresize_torch_gradient() -> None:
    x = torch.rand(1, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize_torch(t, size=(4, 11)), (x,))
    y = imresize_torch(x, 0.5)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------
# YCbCr
# ---------------------------------------------------------------------------


def test_ycbcr_known_values_and_inverse() -> None:
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    img = rgb.T.reshape(1, 3, 1, 3)  # three pixels in a row
    ycc = rgb_to_ycbcr(img)[0, :, 0, :].T * 255
    np.testing.assert_allclose(ycc[0].numpy(), [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[1].numpy(), [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[2].numpy(), [16 + 65.481, 128 - 37.797, 128 + 112], atol=1e-9)
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x)
    assert rgb_to_y(x).shape == (2, 1, 5, 4)


def test_ycbcr_numpy_and_gradient() -> None:
    arr = RNG.random((4, 5, 3)).astype(np.float32)
    ycc = rgb_to_ycbcr(arr)
    assert ycc.dtype == np.float32 and ycc.shape == (4, 5, 3)
    np.testing.assert_allclose(ycbcr_to_rgb(ycc), arr, atol=1e-5)
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]
    np.testing.assert_allclose(rgb_to_ycbcr(t)[0].permute(1, 2, 0).numpy(), ycc, atol=1e-6)
    np.testing.assert_allclose(rgb_to_y(arr), ycc[..., 0])
    x = torch.rand(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rgb_to_ycbcr, (x,))


def test_odd_path_roundtrip(tmp_path: Path) -> None:
    img = quantize(RNG.random((3, 4, 3)).astype(np.float32))
    path = tmp_path / "dossier é 画像" / "a b#.png"
    write_image(path, img)
    np.testing.assert_array_equal(read_image(path), img)
