"""What every exporter shares: the architecture registry, safe checkpoint loading, ONNX export.

An architecture module (one per architecture) defines its nn.Module classes, written from the
paper and the documented key layout, and registers an `ArchSpec`. The zoo manifest refers to
architectures by name; `export_onnx` is the one export path for all of them.

`export_onnx` writes the canonical file: RGB NCHW float32 in [0, 1] in and out (a 0..255 model
gets its `x*255` / `/255` inside the graph), dynamic batch/height/width, input `lr`, output
`sr`, opset 17 through the legacy TorchScript exporter (onnx2torch 1.5.15 covers opset <= 17 and
the dynamo exporter emits newer op versions), `sreval.*` metadata (conventions plus the Table 1
graph statistics of `sreval.graphstats`), then an onnxruntime parity check before the file
appears at its final path.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from sreval import memory, parity
from sreval.conventions import COMPUTED_KEYS, Meta, channels_of, to_metadata
from sreval.convert.graph import bypass_initializer_identities
from sreval.errors import ModelError
from sreval.files import atomic_write
from sreval.graphstats import graph_stats
from sreval.runtime import first_line

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class ArchSpec:
    """An SR architecture the zoo can build.

    `build(scale)` returns a randomly initialised module whose `state_dict()` has exactly the
    official checkpoint's key layout. `value_range` is what the native module reads and writes
    (1.0 or 255.0); `channels` is "rgb" or "y"; `preupsampled` means it takes the bicubic-upscaled
    image (VDSR style). `fix_state_dict` maps an official checkpoint's raw dict onto our keys
    (e.g. strips a DataParallel `module.` prefix) before the strict load.
    """

    name: str
    build: Callable[[int], nn.Module]
    scales: tuple[int, ...] = (4,)
    value_range: float = 1.0
    channels: str = "rgb"
    preupsampled: bool = False
    gan_trained: bool = False
    paper: str = ""
    fix_state_dict: Callable[[StateDict], StateDict] | None = None
    notes: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.value_range not in (1.0, 255.0):
            raise ValueError(f"{self.name}: value_range must be 1.0 or 255.0")
        if self.channels not in ("rgb", "y"):
            raise ValueError(f"{self.name}: channels must be 'rgb' or 'y'")


ARCHS: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    if spec.name in ARCHS:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    ARCHS[spec.name] = spec
    return spec


def strip_prefix(prefix: str) -> Callable[[StateDict], StateDict]:
    def fix(sd: StateDict) -> StateDict:
        return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}

    return fix


def read_checkpoint(path: str | Path, data: bytes | None = None) -> StateDict:
    """Load a checkpoint as plain data (`weights_only=True`) and find its state dict.

    Accepts a bare state dict or the usual wrappers (`state_dict`, `params_ema`, `params`,
    `model`). A file that needs arbitrary unpickling (a whole pickled model) is refused with an
    explanation instead of being executed. `data`: the file's bytes where the caller has read
    them already. What the file declares (its size, its zip records' sizes, its tensors' shapes)
    is checked against the memory budget before it is allocated.
    """
    path = Path(path)
    if data is None:
        data = memory.read_limited(path, "checkpoint")
    _check_records(path.name, data)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelError(
            f"{path.name}: refusing to unpickle: the checkpoint stores Python objects, not only "
            f"tensors (a whole pickled model?), and loading it would run code from the file; "
            f"extract its state_dict in a trusted environment first ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, io.UnsupportedOperation, ValueError) as e:
        raise ModelError(f"{path.name}: not a readable PyTorch checkpoint ({first_line(e)})") from None
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelError(f"{path.name}: no state dict of tensors found in the checkpoint")
    return check_tensors(path.name, {str(k): v for k, v in obj.items()})


def _check_records(name: str, data: bytes) -> None:
    """A zip checkpoint's records, by the sizes they declare, against the memory budget (a
    deflated record of a few MB may inflate to GBs)."""
    buf = io.BytesIO(data)
    if not zipfile.is_zipfile(buf):
        return
    try:
        with zipfile.ZipFile(buf) as z:
            total = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ModelError(f"{name}: not a readable PyTorch checkpoint ({e})") from None
    memory.require(total, f"{name}: the checkpoint's zip records (by their declared sizes)")


def check_tensors(name: str, sd: StateDict) -> StateDict:
    """Dense tensors only, whose declared sizes (shape x element size, what a contiguous copy
    takes: a value viewed as 20000 x 20000 with zero strides is 1.6 GB) fit the memory budget."""
    for k, t in sd.items():
        if t.layout != torch.strided:
            raise ModelError(f"{name}: tensor {k!r} is stored as {str(t.layout).removeprefix('torch.')}; "
                             f"sreval reads dense tensors only")
    memory.require(sum(t.numel() * t.element_size() for t in sd.values()),
                   f"{name}: the checkpoint's tensors (by their declared shapes)")
    return sd


def load_weights(module: nn.Module, spec: ArchSpec, state_dict: StateDict, source: str) -> None:
    """Strict load; a checkpoint of another architecture is refused with the keys that differ."""
    if spec.fix_state_dict is not None:
        state_dict = spec.fix_state_dict(state_dict)
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise ModelError(
            f"{source} is not a {spec.name} checkpoint: missing keys [{show(missing)}], "
            f"unexpected keys [{show(unexpected)}]"
        )
    bad = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ModelError(
            f"{source} does not fit {spec.name}: {k} has shape {tuple(state_dict[k].shape)}, "
            f"expected {tuple(own[k].shape)} ({len(bad)} tensor(s) differ)"
        )
    module.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)


# ----------------------------------------------------------------------------- shared layers


class MeanShift(nn.Module):
    """The fixed RGB mean shift of EDSR/RCAN/CARN, computed as `x * diag(W) + b`.

    The official code implements it as a frozen 1x1 Conv2d (weight I/std, bias +-range*mean/std).
    Here it is an elementwise Mul+Add, so the exported graph has no Conv node for it (Table 1
    does not count mean-shift layers) while `weight` (3, 3, 1, 1) and `bias` (3,) stay in the
    state dict under the official names. They are buffers, not parameters: they are not trained,
    and `parameters()` then counts exactly what Table 1 counts. The forward reads two derived
    (1, 3, 1, 1) buffers refreshed at every `load_state_dict`, so the exported graph holds them as
    plain initializers (the legacy exporter does not constant-fold a ReduceSum). A checkpoint
    whose weight is not diagonal would need a real channel mix, so loading one is refused.
    """

    weight: Tensor
    bias: Tensor
    diag: Tensor
    shift: Tensor

    def __init__(self, mean: tuple[float, float, float], value_range: float, sign: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("bias", sign * value_range * torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("diag", torch.ones(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1), persistent=False)
        self._refresh()

    def _refresh(self) -> None:
        with torch.no_grad():
            self.diag.copy_(torch.diagonal(self.weight.reshape(3, 3)).view(1, 3, 1, 1))
            self.shift.copy_(self.bias.view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.diag + self.shift

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        w = state_dict.get(prefix + "weight")
        if w is not None and w.numel() == 9:
            m = w.reshape(3, 3).float()
            if not torch.equal(m, torch.diag(torch.diagonal(m))):
                raise ModelError(f"{prefix}weight: mean shift with a non-diagonal weight")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._refresh()


def learnable_params(module: nn.Module) -> int:
    """Values in the module's parameters (shared ones once; fixed mean-shift buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- ONNX export


class RangeAdapter(nn.Module):
    """Maps the library's [0, 1] onto a module that reads and writes 0..value_range."""

    def __init__(self, net: nn.Module, value_range: float) -> None:
        super().__init__()
        self.net = net
        self.value_range = float(value_range)

    def forward(self, x: Tensor) -> Tensor:
        if self.value_range == 1.0:
            return self.net(x)
        return self.net(x * self.value_range) / self.value_range


def export_onnx(
    module: nn.Module,
    spec: ArchSpec,
    path: str | Path,
    *,
    scale: int,
    metadata: Mapping[str, str],
    opset: int = 17,
    wrap: bool = True,
    output: int = -1,
) -> Path:
    """Export `module` (already holding its weights, put in eval mode here) as the canonical
    ONNX file at `path`.

    `wrap=True` puts the [0, 1] range adapter around a 0..255 module; `wrap=False` exports the
    module in its native convention (Y-only models, which are [0, 1] already) and records that
    convention. `spec.extra["min_input"]` (smallest input side the model accepts) enlarges the
    example and parity inputs. A module returning several images (LapSRN's x2 and x4) keeps
    them all; the one at index `output` is named `sr` (the others `sr_<i>`) and recorded as
    `sreval.output`. `metadata` adds entries (weights source, licence, weights sha256, ...); it
    may repeat but not contradict a computed `sreval.*` entry. The graph is checked against
    the module with onnxruntime on odd sizes before it is written (atomically): a failed export
    leaves no file behind.
    """
    path = Path(path)
    if scale not in spec.scales:
        raise ModelError(f"{spec.name} has no x{scale} model (scales: {spec.scales})")
    net = RangeAdapter(module, spec.value_range if wrap else 1.0).eval()
    channels, min_size = channels_of(spec.channels), int(spec.extra.get("min_input", "1"))
    example = torch.rand(1, channels, max(16, min_size), max(16, min_size))
    names = _output_names(net, example, output)
    proto = trace_to_onnx(net, example, opset, names)
    bypass_initializer_identities(proto.graph)
    props = _merge(_metadata(proto, module, spec, scale, wrap, names), metadata, spec.name)
    check_parity(net, proto, channels, spec.name, min_size)
    return write_model(proto, path, props)


def _metadata(
    proto: onnx.ModelProto,
    module: nn.Module,
    spec: ArchSpec,
    scale: int,
    wrap: bool,
    names: list[str],
) -> dict[str, str]:
    """The computed `sreval.*` entries: conventions and Table 1 statistics."""
    stats = graph_stats(proto)
    props = to_metadata(scale=scale, value_range=1.0 if wrap else spec.value_range, color=spec.channels,
                        preupsampled=spec.preupsampled) | {
        Meta.ARCH: spec.name,
        Meta.GAN_TRAINED: "1" if spec.gan_trained else "0",
        Meta.PARAMS: str(stats.params),
        Meta.CONV_LAYERS: str(stats.conv_layers),
    }
    own = learnable_params(module)
    if own != stats.params:
        # e.g. multi-scale CARN / EUSR checkpoints: Table 1 shows both counts
        props[Meta.PARAMS_CHECKPOINT] = str(own)
    if len(names) > 1:
        props[Meta.field("output")] = str(names.index("sr"))
    return props


def _merge(computed: dict[str, str], extra: Mapping[str, str], name: str) -> dict[str, str]:
    """The caller's entries after ours; a contradicted `sreval.*` value is an error."""
    clash = sorted(k for k in extra if k in COMPUTED_KEYS and computed.get(k) != extra[k])
    if clash:
        raise ModelError(f"export of {name}: metadata {clash} contradicts the computed values")
    return computed | {k: str(v) for k, v in extra.items()}


def _output_names(net: nn.Module, example: Tensor, output: int) -> list[str]:
    """`sr` for the chosen output, `sr_<i>` for any others (one cheap probe run)."""
    with torch.no_grad():
        count = len(parity.outputs(net(example)))
    if not -count <= output < count:
        raise ModelError(f"output index {output} out of range: the model gives {count} output(s)")
    chosen = output % count
    return ["sr" if i == chosen else f"sr_{i}" for i in range(count)]


def trace_to_onnx(
    net: nn.Module, example: Tensor, opset: int, output_names: list[str], dynamic: bool = True
) -> onnx.ModelProto:
    """The TorchScript (legacy) export, input `lr`, batch, height and width dynamic unless
    `dynamic` is False (then the example's shape is baked in)."""
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter is deprecated, but it emits the opset-17 graphs onnx2torch reads
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["lr"],
            output_names=output_names,
            dynamic_axes={name: axes for name in ["lr", *output_names]} if dynamic else None,
            do_constant_folding=True,
        )
    return onnx.load_model_from_string(buf.getvalue())


def check_parity(net: nn.Module, proto: onnx.ModelProto, channels: int, name: str, min_size: int = 1) -> float:
    """`sreval.parity.check_export` on the loader's sizes, each side grown by `min_size` for
    models that need larger inputs."""
    return parity.check_export(net, proto, parity.grown(parity.SIZES, min_size), channels=channels,
                               name=f"export of {name}")


def write_model(proto: onnx.ModelProto, path: Path, metadata: Mapping[str, str]) -> Path:
    """The graph with `metadata` as its metadata_props, written atomically (`sreval.files`):
    an export that fails before this leaves no file behind."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    atomic_write(path, proto.SerializeToString())
    return path
