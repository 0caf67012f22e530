"""Errors the library raises. The CLI turns every SrevalError into one line and exit code 1."""

from __future__ import annotations


class SrevalError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code: int = 1


class ModelError(SrevalError):
    """The model file is missing, unreadable, not ONNX, or not a super-resolution model."""


class UnsupportedOperatorError(ModelError):
    """onnx2torch cannot convert one or more operators (named in the message)."""

    def __init__(self, ops: list[str]):
        self.ops = ops
        super().__init__("unsupported ONNX operator(s): " + ", ".join(ops))


class ParityError(ModelError):
    """The PyTorch conversion disagrees with onnxruntime, or gives no gradient."""


class DataError(SrevalError):
    """An image or dataset cannot be used (unreadable, empty folder, size mismatch)."""


class ConfigError(SrevalError):
    """A bad option value (budget, steps, crop, ...)."""
