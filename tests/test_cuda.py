"""The CUDA path: the same numbers as on CPU, the onnxruntime reference on the GPU where
onnxruntime-gpu is installed. Skipped without a CUDA device; `benchmarks/gpu_check.sh` runs
them on a machine with one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sreval
from sreval.cli import app
from sreval.model import SRModel
from tests.tiny import TinySR, export

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinySR(scale=2), tmp_path_factory.mktemp("cuda") / "tiny.onnx")


def test_the_conversion_matches_onnxruntime_on_cuda(model_file: Path) -> None:
    m = SRModel(model_file, device="cuda")
    assert m.check_parity().ok and next(m.torch().parameters()).device.type == "cuda"


def test_an_attack_on_cuda_gives_the_cpu_numbers(model_file: Path) -> None:
    x0 = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    hr = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    out = {}
    for device in ("cpu", "cuda"):
        net = sreval.load_model(model_file, device=device)
        xs, _ = sreval.IFGSM(net, eps=[2 / 255, 8 / 255], steps=5).run(x0.to(device), hr.to(device), ids=[0])
        out[device] = xs.cpu()
    # 8-bit deliveries: a gradient sign flipped by float rounding moves a pixel by one level
    assert (out["cpu"] - out["cuda"]).abs().max() <= 1 / 255 + 1e-6
    assert (out["cpu"] != out["cuda"]).float().mean() < 0.01


def test_the_cli_runs_on_cuda(model_file: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["attack", str(model_file), "--data", "default", "--limit", "1", "--alpha", "8/255",
                                 "--steps", "2", "--device", "cuda", "--out", str(tmp_path / "o"), "--no-sanity"])
    assert r.exit_code == 0, r.output
    report = (tmp_path / "o" / "report.json").read_text()
    assert '"device": "cuda' in report


def test_onnxruntime_uses_the_gpu_where_it_can(model_file: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDA (the CPU build): the reference runs on CPU")
    m = SRModel(model_file, device="cuda")
    assert m._session().get_providers()[0] == "CUDAExecutionProvider"
    lr = np.random.default_rng(0).random((1, 3, 16, 16), np.float32)
    assert torch.isfinite(m.ort()(torch.from_numpy(lr))).all()
