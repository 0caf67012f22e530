"""Bring your own checkpoint: a .pth / .pt / .ckpt / .safetensors file in, a verified ONNX file out.

spandrel (the `checkpoints` extra) recognises the architecture from the state dict alone and
builds its PyTorch module. The state dict is read here as data: `torch.load(weights_only=True)`
(no pickled code runs) or safetensors. The module is exported with the exporters that work for
it, tried in order: the TorchScript exporter (opset 17, dynamic batch and size), then a
fixed-size TorchScript export (batch 1, `FIXED_SIZE`; sreval tiles images for it, and the file
records the size), then torch's dynamo exporter (opset 18, dynamic; it is last because
torch.export takes a minute to give up on the window-attention models the first two handle). A candidate file counts only when
onnxruntime gives the module's numbers (`sreval.parity`: photo crops of several sizes, one a
batch of 2, so a baked batch or size is caught). Models that need a minimum size or a multiple
of a window get padding inside the exported graph (replicate, cropped off again), so the file
takes any image.

Exports are cached in the user cache under the state dict's content hash (the same weights as
.pth or .safetensors are one export) and the sreval version; a cached file is used only when its
SHA-256 is the one recorded beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import onnx
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval import memory, parity
from sreval.conventions import Meta, to_metadata
from sreval.convert.graph import bypass_initializer_identities
from sreval.errors import ConfigError, ModelError, SrevalError
from sreval.exporters.common import StateDict, check_tensors, read_checkpoint, trace_to_onnx, write_model
from sreval.files import atomic_write, cache_dir, sha256_file
from sreval.graphstats import graph_stats
from sreval.cells import code_version
from sreval.runtime import first_line, padding_to_fit

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
EXPORTERS = ("torchscript", "torchscript-fixed", "dynamo")
FIXED_SIZE = 64  # LR side of a fixed-size export


@dataclass(frozen=True)
class Exported:
    """An exported checkpoint: the verified ONNX file and what it was made from."""

    path: Path
    checkpoint: str
    architecture: str
    scale: int
    exporter: str
    max_diff: float
    fixed_size: int | None = None
    tried: tuple[str, ...] = ()  # why the exporters before it failed


def is_checkpoint(spec: str | Path) -> bool:
    return Path(spec).suffix.lower() in SUFFIXES


def _spandrel() -> Any:
    """spandrel, an optional dependency: `pip install 'sreval[checkpoints]'`."""
    try:
        import spandrel
    except ImportError:
        raise ConfigError("reading a PyTorch checkpoint needs spandrel: pip install 'sreval[checkpoints]'") from None
    return spandrel


def read_state_dict(path: Path, data: bytes | None = None) -> StateDict:
    """The checkpoint's tensors, read as data only (`data`: its bytes, where already read),
    with what it declares checked against the memory budget before it is allocated."""
    if data is None:
        data = memory.read_limited(path, "checkpoint")
    if path.suffix.lower() != ".safetensors":
        return read_checkpoint(path, data)
    _spandrel()  # safetensors comes with the checkpoints extra
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return check_tensors(path.name, dict(load(data)))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path.name}: not a readable safetensors file ({first_line(e)})") from None


def state_dict_digest(sd: StateDict) -> str:
    """SHA-256 of the tensors themselves (names, dtypes, shapes, bytes): one identity for the
    same weights in any file format."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def describe(path: Path, sd: StateDict) -> Any:
    """spandrel's descriptor of an SR checkpoint; one ModelError line for anything else. The
    architecture is first built on the meta device (no memory), and built for real only when
    its parameters fit the memory budget: a small state dict can declare a huge network."""
    spandrel = _spandrel()
    try:
        need = _network_bytes(spandrel, sd)
        if need is not None:
            memory.require(need, f"{path.name}: the network this checkpoint describes")
        desc = spandrel.ModelLoader("cpu").load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        keys = ", ".join(sorted(sd)[:3])
        raise ModelError(f"{path.name}: spandrel does not recognise this checkpoint's architecture "
                         f"({len(sd)} tensors, keys such as {keys})") from None
    except SrevalError:
        raise
    except Exception as e:  # a recognised layout whose shapes do not fit its architecture
        raise ModelError(f"{path.name}: spandrel cannot build the model from this checkpoint: {first_line(e)}") from None
    arch = desc.architecture.name
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise ModelError(f"{path.name}: not an SR model: spandrel recognises {arch} ({desc.purpose}), "
                         f"which needs a mask as well as an image")
    if desc.scale < 2:
        raise ModelError(f"{path.name}: not an SR model: spandrel recognises {arch}, a {desc.purpose.lower()} "
                         f"model at scale {desc.scale}")
    if desc.input_channels not in (1, 3) or desc.output_channels != desc.input_channels:
        raise ModelError(f"{path.name}: {arch} takes {desc.input_channels} and gives {desc.output_channels} "
                         f"channels; sreval attacks RGB or Y models")
    return desc


def _network_bytes(spandrel: Any, sd: StateDict) -> int | None:
    """The bytes of the parameters and buffers of the network spandrel builds from `sd`,
    measured on the meta device (nothing allocated); None where an architecture cannot be
    built there (the real build then decides)."""
    try:
        # shapes only: the state dict is not loaded (a small one may declare what it cannot fill)
        with warnings.catch_warnings(), torch.device("meta"), \
                mock.patch.object(nn.Module, "load_state_dict", lambda *a, **k: None):
            warnings.simplefilter("ignore")
            net = spandrel.MAIN_REGISTRY.load(sd).model
    except spandrel.UnsupportedModelError:
        raise
    except Exception:  # noqa: BLE001 - data-dependent construction on meta tensors
        return None
    return sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])


class Padded(nn.Module):
    """The model on any input size: padded (replicate) up to its minimum size and multiple,
    the output cropped back to scale x the input."""

    def __init__(self, net: nn.Module, scale: int, minimum: int, multiple: int,
                 call: Callable[[nn.Module, Tensor], Tensor] | None = None):
        super().__init__()
        self.net, self.scale, self.minimum, self.multiple = net, scale, max(1, minimum), max(1, multiple)
        self.call = call or (lambda net, x: net(x))

    def forward(self, x: Tensor) -> Tensor:
        if self.minimum == 1 and self.multiple == 1:
            return self.call(self.net, x)
        h, w = x.shape[-2], x.shape[-1]
        ph = padding_to_fit(h, self.minimum, self.multiple)
        pw = padding_to_fit(w, self.minimum, self.multiple)
        y = self.call(self.net, F.pad(x, (0, pw, 0, ph), mode="replicate"))
        return y[..., : h * self.scale, : w * self.scale]


def wrapped(desc: Any) -> Padded:
    req = desc.size_requirements
    # how spandrel runs this architecture (some take extra arguments); its public __call__
    # runs in inference mode and clamps in place, which an exported graph must not do
    call = getattr(desc, "_call_fn", None)
    return Padded(desc.model.eval(), desc.scale, req.minimum, req.multiple_of, call).eval()


# ----------------------------------------------------------------------------- exporting


def _dynamo(net: nn.Module, example: Tensor) -> onnx.ModelProto:
    dim = torch.export.Dim
    shapes = ({0: dim("batch", min=1, max=64), 2: dim("height", min=4, max=4096),
               3: dim("width", min=4, max=4096)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=18, input_names=["lr"],
                                    output_names=["sr"], dynamic_shapes=shapes, verbose=False)
    return program.model_proto


def _attempt(exporter: str, net: Padded, channels: int, name: str) -> tuple[onnx.ModelProto, float]:
    fixed = exporter == "torchscript-fixed"
    side = FIXED_SIZE if fixed else 24
    example = torch.rand(1, channels, side, side)
    if exporter == "dynamo":
        proto = _dynamo(net, example)
    else:
        with torch.no_grad():
            proto = trace_to_onnx(_at_fixed_size(net) if fixed else net, example, 17, ["sr"], dynamic=not fixed)
    sizes = [(1, FIXED_SIZE, FIXED_SIZE)] if fixed else list(parity.SIZES) + [(1, 32, 28)]
    return proto, parity.check_export(net, proto, sizes, channels=channels, name=f"export of {name}")


def _at_fixed_size(net: Padded) -> nn.Module:
    """The model without its padding where FIXED_SIZE needs none: the padding's arithmetic on
    traced sizes would make sizes inside the model non-constant (SAFMN's adaptive pooling to
    a fraction of the input cannot be exported then)."""
    if padding_to_fit(FIXED_SIZE, net.minimum, net.multiple):
        return net
    return Padded(net.net, net.scale, 1, 1, net.call).eval()


def export(source: Path, target: Path, shown: str | None = None) -> Exported:
    """Export a checkpoint to a verified ONNX file at `target` (written atomically); `shown`:
    the checkpoint's own file name where `source` is a private copy of its bytes."""
    path = source.with_name(shown) if shown else source
    sd = read_state_dict(path, memory.read_limited(source, "checkpoint"))
    desc = describe(path, sd)
    net = wrapped(desc)
    arch = desc.architecture.name
    channels = desc.input_channels
    tried: list[str] = []
    order = EXPORTERS[1:] if desc.size_requirements.square else EXPORTERS  # square: fixed-size tiles
    for exporter in order:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                proto, diff = _attempt(exporter, net, channels, path.name)  # exporters print their failures
        except Exception as e:  # noqa: BLE001 - every exporter fails in its own way; the next one may work
            if isinstance(e, KeyboardInterrupt):
                raise
            tried.append(f"{exporter}: {first_line(e, 160)}")
            continue
        fixed = FIXED_SIZE if exporter == "torchscript-fixed" else None
        bypass_initializer_identities(proto.graph)
        write_model(proto, target, _metadata(proto, path, sd, desc, exporter, fixed))
        return Exported(target, path.name, arch, desc.scale, exporter, diff, fixed, tuple(tried))
    raise ModelError(f"{path.name}: {arch} cannot be exported to ONNX: " + "; ".join(tried))


def _metadata(proto: onnx.ModelProto, path: Path, sd: StateDict, desc: Any, exporter: str,
              fixed: int | None) -> dict[str, str]:
    stats = graph_stats(proto)
    meta = to_metadata(scale=desc.scale, value_range=1.0, color="rgb" if desc.input_channels == 3 else "y") | {
        Meta.NAME: path.stem, Meta.ARCH: desc.architecture.name, Meta.PARAMS: str(stats.params),
        Meta.CONV_LAYERS: str(stats.conv_layers), Meta.WEIGHTS_SOURCE: f"checkpoint:{path.name}",
        Meta.WEIGHTS_SHA256: state_dict_digest(sd), Meta.CHECKPOINT: path.name, Meta.EXPORTER: exporter,
    }
    if fixed is not None:
        meta[Meta.EXPORT_SIZE] = f"{fixed}x{fixed}"
    return meta


def export_isolated(path: Path, target: Path, data: bytes | None = None,
                    on_start: Callable[[], None] | None = None) -> Exported:
    """`export` in a child process: an exporter that crashes (torch's TorchScript exporter
    segfaults on some graphs, GRL's among them) or runs out of memory ends in one error line
    naming the cause, not in a dead sreval. The child exports a private copy of exactly the
    bytes read here (`data`, where the caller has read them), so a checkpoint rewritten
    meanwhile cannot swap its weights in. The checks that need no export (an unknown or non-SR
    checkpoint, one over the memory budget) run here first, then `on_start`."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise ConfigError(f"{target}: exists and is not a regular file; the export is written only as a new file "
                          f"or over a regular one")
    data = memory.read_limited(path, "checkpoint") if data is None else data
    desc = describe(path, read_state_dict(path, data))
    if on_start is not None:
        on_start()
    tag = uuid.uuid4().hex[:12]
    source, result = (target.with_name(f".{target.name}.{tag}{ext}") for ext in (f".src{path.suffix}", ".json"))
    code = "import sys; from sreval.checkpoint import _child; sys.exit(_child(sys.argv[1:]))"
    try:
        source.write_bytes(data)
        r = subprocess.run([sys.executable, "-c", code, str(source), str(target), str(result), path.name],
                           capture_output=True, text=True, env={**os.environ, "PYTHONFAULTHANDLER": ""})
        answer = json.loads(result.read_text()) if result.is_file() else {"error": _child_failure(path, desc, r)}
    except OSError as e:
        raise ModelError(f"{path.name}: cannot export into {target.parent}: {e.strerror or e}") from None
    finally:
        source.unlink(missing_ok=True)
        result.unlink(missing_ok=True)
    if "error" in answer:
        raise ModelError(answer["error"])
    return Exported(**{**answer, "path": Path(answer["path"]), "tried": tuple(answer["tried"])})


def _child_failure(path: Path, desc: Any, r: subprocess.CompletedProcess[str]) -> str:
    """Why an export child left no answer: the signal that ended it, else the last line of
    what it printed (a traceback's last line names the exception)."""
    what = f"{path.name}: {desc.architecture.name} cannot be exported to ONNX"
    if r.returncode < 0:
        sig = signal.Signals(-r.returncode).name
        return f"{what}: the exporter " + ("was killed (SIGKILL: out of memory?)" if sig == "SIGKILL" else f"crashed ({sig})")
    lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
    return f"{what}: the export process failed (exit {r.returncode}): {lines[-1][:300] if lines else 'no message'}"


def _child(argv: list[str]) -> int:
    """The export child: SOURCE TARGET RESULT NAME -> the export's outcome as JSON in RESULT."""
    source, target, result = (Path(a) for a in argv[:3])
    try:
        done = export(source, target, argv[3])
        answer: dict[str, Any] = {**asdict(done), "path": str(done.path)}
    except ModelError as e:
        answer = {"error": str(e)}
    except (Exception, MemoryError) as e:  # noqa: BLE001 - reported by its cause
        answer = {"error": f"{argv[3]}: the export failed: {type(e).__name__}: {first_line(e)}"}
    result.write_text(json.dumps(answer))
    return 0


# ----------------------------------------------------------------------------- the cache


def cached_onnx(path: Path, on_export: Callable[[str], None] | None = None) -> Path:
    """The verified ONNX file of a checkpoint, exported once per state dict and sreval version
    into the user cache (SREVAL_CACHE). A cached file is used only when its SHA-256 is the
    recorded one and the weights digest it carries in its metadata is the key's; otherwise it
    is exported again, and the new file's digest is checked before it is recorded."""
    data = memory.read_limited(path, "checkpoint")
    weights = state_dict_digest(read_state_dict(path, data))
    key = f"{weights[:24]}-{code_version().replace('+', '-')}"
    folder = cache_dir() / "checkpoints"
    onnx_path, record = folder / f"{key}.onnx", folder / f"{key}.json"
    if _cached(onnx_path, record, weights):
        return onnx_path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the export cache {folder}: {e.strerror or e}") from None
    note = None if on_export is None else lambda: on_export(f"exporting {path.name} to ONNX (once; cached in {folder})")
    done = export_isolated(path, onnx_path, data, note)
    if _weights_of(onnx_path) != weights:
        onnx_path.unlink(missing_ok=True)
        raise ModelError(f"{path.name}: the export does not carry the weights read from the checkpoint")
    atomic_write(record, json.dumps({**asdict(done), "path": str(done.path), "sha256": sha256_file(onnx_path)},
                                    indent=1) + "\n")
    return onnx_path


def _cached(onnx_path: Path, record: Path, weights: str) -> bool:
    """Whether the cache holds this state dict's verified export."""
    try:
        if not onnx_path.is_file() or onnx_path.is_symlink():
            return False
        return json.loads(record.read_text())["sha256"] == sha256_file(onnx_path) and _weights_of(onnx_path) == weights
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no record, or a damaged one: export again


def _weights_of(onnx_path: Path) -> str | None:
    """The weights digest an exported file carries in its metadata."""
    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a damaged file carries nothing
        return None
    return next((p.value for p in proto.metadata_props if p.key == Meta.WEIGHTS_SHA256), None)


__all__ = ["SUFFIXES", "EXPORTERS", "Exported", "is_checkpoint", "read_state_dict", "describe", "export",
           "export_isolated", "cached_onnx", "state_dict_digest"]

