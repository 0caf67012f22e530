"""One ONNX SR model: its file read as data (`sreval.onnxfile`), its conventions
(`sreval.resolve`: overrides, `sreval.*` metadata, shapes and a probe run; then detection,
`sreval.detect`, for foreign files), its differentiable onnx2torch conversion and its
onnxruntime reference, both behind the same adapter (`sreval.runtime`), and the parity between
the two (`sreval.parity`). Opening a model by zoo name is `sreval.zoo.open_model`; the public
`sreval.load_model` gives the attack-ready `LoadedModel`.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sreval import detect, parity
from sreval.conventions import Conventions, Meta, Overrides, has_sreval_metadata
from sreval.convert import straight_through_ops, to_torch
from sreval.errors import ConfigError, ModelError, ParityError, UnsupportedOperatorError
from sreval.onnxfile import UPSCALES, add_batch_axis, bind_inputs, bind_upscale_input, compute_precision, dims, image_input, onnx_opset, read_onnx
from sreval.parity import Parity
from sreval.resolve import PROBE_SIZE, Resolver
from sreval.runtime import PROTO_LIMIT, Adapter, OrtCore, first_line, open_session, probe_seconds, resolve_device
from sreval.trial import trial

RUNTIMES = ("auto", "torch", "onnxruntime")
CHANNELS_LAST_DEFAULT = True


class ConversionError(ModelError):
    """onnx2torch converted nothing usable (a converter failed); onnxruntime may still run it."""


class SRModel:
    """An ONNX SR model, its conventions, its converted torch module and its ORT reference.

    `overrides` (scale, range, color, layout, preupsampled, output; None = not given) beat the
    file's `sreval.*` metadata, which beats what the shapes and a probe run show.
    `detect_conventions` runs convention detection (`sreval.detect`) on small natural-photo crops for the fields
    that neither an override nor metadata fix (range, colour order): True always, False never,
    None (the default) only for a foreign file, i.e. one without any `sreval.` metadata. A
    detected value is used only when detection is confident and the winner beats bicubic (see
    `sreval.detect`). It costs 4 to 8 onnxruntime runs on 32x32 crops: 0.6 s for FSRCNN or
    RFDN, 3.5 s for the 16.7M-parameter RRDB, on 2 busy CPU cores (photos loaded once per
    process).
    """

    def __init__(self, path: str | Path, *, device: str = "auto", overrides: Overrides | None = None,
                 detect_conventions: bool | None = None, channels_last: bool | None = None, **fields: Any):
        self.path = Path(path)
        # channels_last (NHWC) convolutions: faster with cuDNN, and measured on CPU too
        # (benchmarks/README.md); None = the default for the device.
        self.channels_last = CHANNELS_LAST_DEFAULT if channels_last is None else channels_last
        self.proto, self.sha256 = read_onnx(self.path)
        self.device = resolve_device(device)
        self.metadata = {p.key: p.value for p in self.proto.metadata_props}
        self.opset = onnx_opset(self.proto)
        # values for the model's non-image inputs (--input-value NAME=VALUE), bound into the graph
        if overrides is not None and fields:
            raise ConfigError("give a model's conventions as overrides= or as keywords, not both")
        self.overrides = overrides if overrides is not None else Overrides.of(fields)
        self.input_values = dict(self.overrides.inputs)
        upscales = {k: v for k, v in self.input_values.items() if v in UPSCALES}  # NAME=bicubic: an image input
        self.proto = bind_inputs(self.proto, {k: v for k, v in self.input_values.items() if k not in upscales},
                                 self.path.name)
        self.proto, self.upscale_input = bind_upscale_input(self.proto, self.path.name, upscales)
        self.proto, self.unbatched = add_batch_axis(self.proto)  # a rank-3 input: fed a batch of one
        self.input = image_input(self.proto, self.path.name)
        self.input_dims = dims(self.input)
        given = self.overrides.given()
        self.resolver = Resolver(self.path.name, self.proto, self.input, self.input_dims, self.metadata,
                                 self._session)
        self.sources = self.resolver.sources
        self.detection: Any = None
        self.conversion_error: str | None = None
        self.run_bytes: float | None = None  # an onnxruntime run's memory per input element (`sreval.trial`)
        self._parity: Parity | None = None
        self.conventions = self.resolver.resolve(given)
        if self.unbatched:
            self.sources["batch"] = "shape: the input has no batch axis (rank 3): one image at a time"
        if self.upscale_input is not None:
            self.sources["upscale_input"] = f"shape: {self.upscale_input.describe()}"
        if detect_conventions or (detect_conventions is None and not has_sreval_metadata(self.metadata)):
            self._detect()

    # ----------------------------------------------------------------- conventions

    def _detect(self) -> None:
        """Detection at load for the fields nothing fixed (see the class docstring); a range
        that was given fixes the value mapping (its normalisation, where not given, is none)."""
        open_ = [f for f in detect.DETECTABLE if self.sources.get(f) == "default"]
        if self.sources.get("range") != "default":
            open_ = [f for f in open_ if f != "normalize"]
        fields = list(detect.choices(self.conventions, open_))
        if fields:
            self.conventions, self.detection = detect.adopt(self, fields)
            doubt = detect.ambiguity(self.detection)
            if doubt:
                warnings.warn(f"{self.path.name}: {doubt}", stacklevel=3)

    def input_size(self, layout: str, h: int, w: int) -> tuple[int, int]:
        return self.resolver.input_size(layout, h, w)

    def _run_checked(self, module: nn.Module, x: Tensor) -> Tensor:
        try:
            with torch.no_grad():
                y = module(x)
        except ModelError as e:
            raise ModelError(f"{self.path.name}: {e}") from None
        except Exception as e:
            raise ModelError(f"{self.path.name}: the model failed to run: {first_line(e)}") from None
        if not torch.isfinite(y).all():
            raise ModelError(f"{self.path.name}: model output contains NaN or Inf")
        return y

    # ----------------------------------------------------------------- runtimes

    def _session(self) -> Any:
        if "_sess" not in self.__dict__:
            if self.proto.ByteSize() < PROTO_LIMIT:  # its first run, in a child under the memory budget
                key = f"{self.sha256}:{sorted(self.input_values.items())}"  # the file as bound
                self.run_bytes = trial(self.proto.SerializeToString(), self.path.name, key, probe_seconds() + 15)
            self.__dict__["_sess"] = open_session(self.proto, self.path.name, self.device, self.path)
        return self.__dict__["_sess"]

    def ort(self, conventions: Conventions | None = None, time_limit: float | None = None) -> Adapter:
        """The onnxruntime reference behind the adapter (no gradients)."""
        session = self._session()  # first: its trial measures run_bytes
        return Adapter(OrtCore(session, time_limit, self.run_bytes, self.path.name), conventions or self.conventions)

    def _converted(self) -> nn.Module:
        if "_core" not in self.__dict__:
            try:
                core = to_torch(self.proto)
            except UnsupportedOperatorError as e:
                self.conversion_error = str(e)
                raise
            except ModelError as e:
                self.conversion_error = str(e)
                raise ConversionError(f"{self.path.name}: {e}") from None
            core.eval()
            # Frozen parameters: the attacks need input gradients only (1.5x faster per step).
            for p in core.parameters():
                p.requires_grad_(False)
            if self.conventions.dtype == "float16" and self.device.type == "cpu":
                core = core.float()  # CPU half kernels are slow or missing; compute in float32
            if self.channels_last and self.conventions.layout == "nchw":
                _to_channels_last(core)
            self.__dict__["_core"] = core.to(self.device)
        return self.__dict__["_core"]

    def torch(self) -> Adapter:
        """The differentiable onnx2torch conversion behind the adapter (frozen, eval)."""
        if "_torch" not in self.__dict__:
            fp32 = self.conventions.dtype == "float16" and self.device.type == "cpu"
            adapter = Adapter(self._converted(), self.conventions, "float32" if fp32 else None,
                              channels_last=self.channels_last and self.conventions.layout == "nchw").eval()
            self.__dict__["_torch"] = adapter
        return self.__dict__["_torch"]

    def runtime(self, prefer: str = "auto") -> tuple[nn.Module, str]:
        """The module to evaluate with and its name. 'auto': the parity-checked PyTorch
        conversion, or the onnxruntime reference where onnx2torch cannot convert the model, the
        conversion fails its parity check, or the graph does not compute in float32 (int8,
        float16, rounded output: the conversion agrees within the precision's tolerance, the
        deployed numbers are onnxruntime's); 'torch': the conversion or its error;
        'onnxruntime': the reference, nothing converted (faster for clean metrics, which need
        no gradients)."""
        if prefer not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {prefer!r}")
        if prefer == "onnxruntime" or (prefer == "auto" and self.precision != "fp32"):
            return self.ort(), "onnxruntime"
        try:
            self.check_parity()
        except (UnsupportedOperatorError, ConversionError, ParityError):
            if prefer == "torch":
                raise
            return self.ort(), "onnxruntime"
        return self.torch(), "torch"

    # ----------------------------------------------------------------- parity

    @functools.cached_property
    def straight_through(self) -> list[str]:
        """The graph's operators whose gradient the conversion takes as straight-through."""
        return straight_through_ops(self.proto)

    @functools.cached_property
    def precision(self) -> str:
        """The graph's compute precision (`sreval.onnxfile.compute_precision`): it sets the parity tolerances."""
        return compute_precision(self.proto)

    def check_parity(self, raise_on_fail: bool = True) -> Parity:
        """Run torch and onnxruntime on two odd-sized photo crops (one a batch of 2) and compare
        (`sreval.parity`). The result is kept: a second call costs nothing."""
        if self._parity is None:
            # sizes in the pixels the adapter is fed (RGB LR); a fixed-size model gets its own size
            base = parity.grown(parity.SIZES, self.conventions.min_size or 1)  # above a minimum size
            sizes = [(n, h, w) if self.conventions.tile is None else (n, *self._tile_lr()) for n, h, w in base]
            ref = self.ort(time_limit=probe_seconds())
            self._parity = parity.measure(lambda x: self._run_checked(ref, x), self._run_converted, sizes,
                                          precision=self.precision, name=self.path.name)
        result = self._parity
        if raise_on_fail and not result.ok:
            if not result.close:
                hint = (" (onnxruntime's uint8 x int8 kernels saturate on x86 CPUs without VNNI: such a model is "
                        "quantised with reduce_range)" if result.precision == "int8" else "")
                raise ParityError(f"{self.path.name}: PyTorch conversion differs from onnxruntime: {result.describe()}, "
                                  f"as a fraction of the output range{hint}")
            raise ParityError(
                f"{self.path.name}: input gradient is {'zero' if result.grad_l1 == 0 else 'not finite'}; "
                f"the model cannot be attacked with gradients"
            )
        return result

    def _run_converted(self, x: Tensor) -> Tensor:
        """The PyTorch conversion on a parity input (any failure of it is a ConversionError)."""
        try:
            y = self.torch()(x.to(self.device))
        except ModelError:
            raise
        except Exception as e:  # onnx2torch modules raise what torch raises
            raise ConversionError(f"{self.path.name}: the PyTorch conversion fails on a {x.shape[-2]}x{x.shape[-1]} "
                                  f"input: {first_line(e)}") from None
        if not torch.isfinite(y).all():
            raise ModelError(f"{self.path.name}: converted model output contains NaN or Inf")
        return y

    def _tile_lr(self) -> tuple[int, int]:
        """An RGB input size that fills one tile of a fixed-size model exactly (free axes: the
        probe size)."""
        c = self.conventions
        assert c.tile is not None
        k = c.scale if c.preupsampled else 1
        th, tw = c.tile
        return ((th // k) if th else PROBE_SIZE[0], (tw // k) if tw else PROBE_SIZE[1])

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "path": str(self.path),
            "name": self.metadata.get(Meta.NAME, self.path.stem),
            "sha256": self.sha256,
            "scale": self.conventions.scale,
            "opset": self.opset,
            "conventions": self.conventions.as_dict(),
            "convention_sources": dict(self.sources),
            "precision": self.precision,
            "convention_doubt": detect.weakness(self.detection),
            "upscale_input": self.upscale_input.describe() if self.upscale_input is not None else None,
            "straight_through": self.straight_through,
            "metadata": self.metadata,
        }
        if self.input_values:
            info["input_values"] = dict(self.input_values)
        if Meta.CHECKPOINT in self.metadata:  # exported here from a PyTorch checkpoint
            info["checkpoint"] = {"file": self.metadata[Meta.CHECKPOINT], "architecture": self.metadata.get(Meta.ARCH),
                                  "scale": self.conventions.scale, "exporter": self.metadata.get(Meta.EXPORTER),
                                  "export_size": self.metadata.get(Meta.EXPORT_SIZE),
                                  "weights_sha256": self.metadata.get(Meta.WEIGHTS_SHA256)}
        if self.detection is not None:
            info["detection"] = self.detection.as_dict()
        if self.conversion_error is not None:
            info["parity"] = {"checked": False, "reason": f"no PyTorch conversion ({self.conversion_error}); "
                                                          "run with onnxruntime, parity cannot be checked"}
        return info


def _to_channels_last(module: nn.Module) -> None:
    """The 4-D weights in channels_last (faster convolutions); other ranks as they are:
    `module.to(memory_format=...)` raises on the 5-D constants of window attention."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)


class LoadedModel(nn.Module):
    """A model ready to attack: an `nn.Module` on RGB NCHW [0, 1] whose forward is the
    parity-checked PyTorch conversion behind the adapter (frozen, eval mode). The `SRModel`
    it came from is `.source` (its onnxruntime reference: `.source.ort()`)."""

    def __init__(self, model: SRModel):
        super().__init__()
        self.net = model.torch()
        self.parity = model.check_parity()
        object.__setattr__(self, "source", model)  # not a submodule: no second copy of the weights

    source: SRModel

    @property
    def scale(self) -> int:
        return self.source.conventions.scale

    @property
    def conventions(self) -> Conventions:
        return self.source.conventions

    @property
    def device(self) -> torch.device:
        return self.source.device

    @property
    def name(self) -> str:
        return str(self.source.describe()["name"])

    @property
    def sha256(self) -> str:
        return self.source.sha256

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def describe(self) -> dict[str, Any]:
        return self.source.describe()


__all__ = ["SRModel", "LoadedModel", "ConversionError", "Conventions", "Parity", "RUNTIMES"]
