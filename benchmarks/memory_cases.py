"""Peak memory of sreval on the hostile inputs of issue 22, under the default memory budget.

    python benchmarks/memory_cases.py [WORKDIR]

Builds each file (a few hundred bytes to a few MB; the sparse external-data file takes no disk
space), runs the CLI on it under `/usr/bin/time -v`, and prints one row per case: the peak
resident set size (the largest of sreval and its child processes), the exit code and sreval's
one line. Every case must end in one line, a non-zero exit code and a peak under 2 GB.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sreval.io import write_image  # noqa: E402
from tests.test_hostile import _constant_of_shape_bomb, _external_in_subgraph, _fixed_x16  # noqa: E402
from tests.tiny import TinySR, export  # noqa: E402


def huge_network(path: Path) -> Path:
    sd = {"body.0.weight": torch.zeros(4096, 3, 3, 3), "body.0.bias": torch.zeros(4096), "body.1.weight": torch.zeros(4096)}
    for i in range(1, 1001):
        sd |= {f"body.{2 * i}.weight": torch.zeros(1), f"body.{2 * i}.bias": torch.zeros(1),
               f"body.{2 * i + 1}.weight": torch.zeros(1)}
    sd |= {"body.2002.weight": torch.zeros(48, 1, 3, 3), "body.2002.bias": torch.zeros(48)}
    torch.save(sd, path)
    return path


def zero_strides(path: Path) -> Path:
    torch.save({"w": torch.zeros(1).expand(20000, 20000)}, path)
    return path


def zip_record(path: Path) -> Path:
    """A checkpoint whose storage record inflates from about 2 MB to 2 GB."""
    small = path.with_name("small.pth")
    torch.save({"w": torch.zeros(1)}, small)
    with zipfile.ZipFile(small) as zi, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zo:
        for info in zi.infolist():
            if info.filename.endswith("/data/0"):
                with zo.open(info.filename, "w", force_zip64=True) as f:
                    chunk = bytes(1 << 24)
                    for _ in range(128):
                        f.write(chunk)
            else:
                zo.writestr(info.filename, zi.read(info.filename))
    return path


def sparse_external(folder: Path) -> Path:
    folder.mkdir()
    with open(folder / "w.bin", "wb") as f:
        f.truncate(2 << 30)
    return _external_in_subgraph(folder, "w.bin")


def big_dataset(folder: Path) -> Path:
    folder.mkdir()
    flat = np.full((4000, 6000, 3), 0.5, np.float32)  # 24 megapixels, a few hundred kB as PNG
    for i in range(12):
        write_image(folder / f"img{i:02d}.png", flat)
    return folder


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="sreval-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    tiny = export(TinySR(scale=2), work / "tiny.onnx")
    cases = {
        "checkpoint declaring a 604 GB network": ["inspect", huge_network(work / "huge.pth")],
        "checkpoint tensor viewed as 20000x20000": ["inspect", zero_strides(work / "stride.pth")],
        "checkpoint zip record inflating to 2 GB": ["inspect", zip_record(work / "zip.pth")],
        "external data on a 2 GB sparse file": ["inspect", sparse_external(work / "sparse")],
        "twelve 24-megapixel PNGs": ["evaluate", tiny, "--data", big_dataset(work / "big"), "--out", work / "o1"],
        "ConstantOfShape to 3x16000x16000": ["inspect", _constant_of_shape_bomb(work / "cos.onnx")],
        "fixed 1024x1024 input, x16 output": ["evaluate", _fixed_x16(work / "x16.onnx"), "--data", "default",
                                              "--out", work / "o2"],
    }
    print(f"{'case':42} {'file':>10} {'peak RSS':>9} {'exit':>4}  sreval's line")
    for name, args in cases.items():
        r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "sreval.cli", *map(str, args)],
                           capture_output=True, text=True)
        peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1e6
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(("error", "warning"))]
        target = Path(args[1])
        size = sum(p.stat().st_blocks * 512 for p in ([target] if target.is_file() else target.rglob("*")))
        print(f"{name:42} {size / 1e6:8.2f}MB {peak:7.2f}GB {r.returncode:>4}  {' | '.join(lines)}")


if __name__ == "__main__":
    main()
