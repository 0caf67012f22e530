"""The figure functions: each returns a decodable PNG, copes with infinite/missing values, and
draws what it is given (not a blank canvas)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sreval import figures as F


def decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 5, "a blank figure"
    return img


def test_curves_panels_and_inf() -> None:
    series = {"edsr": [(1 / 255, 40.0), (8 / 255, 17.0)], "bicubic": [(1 / 255, math.inf), (8 / 255, 30.0)],
              "empty": [(1 / 255, None)]}
    png = F.curves([F.Panel("LR - Set5", "PSNR", series), F.Panel("SR - Set5", "PSNR", series)], columns=2)
    img = decode(png)
    assert img.shape[1] > img.shape[0], "two panels side by side"


def test_size_scatter_skips_zero_params() -> None:
    pts = [F.SizePoint("a", 1_000_000, 30, 20.0, False), F.SizePoint("b", 16_000_000, 351, 12.0, True),
           F.SizePoint("bicubic", 0, 0, 35.0, False)]
    decode(F.size_scatter(pts, "BSD100, alpha = 8/255"))


def test_heatmap_with_missing_cells() -> None:
    decode(F.heatmap(["a", "b", "c"], [[16.1, 30.2, None], [25.0, 19.2, 27.0], [28.0, 33.0, 15.0]], "t"))


def test_image_grid_with_box_and_gaps() -> None:
    rng = np.random.default_rng(0)
    lr, sr = rng.random((8, 10, 3)), rng.random((32, 40, 3))
    img = decode(F.image_grid([("model a", [F.Tile("LR", lr, (2, 3, 4, 5)), None, F.Tile("SR", sr)]),
                               ("model b", [F.Tile("LR", lr)])], title="grid"))
    assert img.shape[1] > img.shape[0]


def test_index_scatter_and_profile() -> None:
    decode(F.index_scatter({"a": [(10.0, 20.0), (30.0, 15.0)], "b": [(5.0, None), (0.0, 3.0)]}, "index"))
    decode(F.profile({"a": [(0, 100.0), (1, 10.0), (2, 0.0)], "b": [(0, 5.0)]}, "permeation"))


@pytest.mark.parametrize("alpha, text", [(8 / 255, "8/255"), (0.5 / 255, "0.001961"), (0.0314, "0.0314")])
def test_budget_label(alpha: float, text: str) -> None:
    assert F.budget_label(alpha) == text
