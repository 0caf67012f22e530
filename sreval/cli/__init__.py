"""The `sreval` command line: each command parses options, calls one library function, prints.

Library errors (SrevalError) become one red line on stderr and exit code 1; never a traceback.
Importing this package loads typer and rich, not torch: the library is imported when a command
runs, so `sreval --help` and every `COMMAND --help` answer at once.
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from sreval.cli import jobs, tools  # defining their commands registers them
from sreval.cli.base import COMMANDS
from sreval.errors import SrevalError
from sreval.memory import parse_size

app = typer.Typer(
    name="sreval",
    help="Adversarial robustness of super-resolution models (any ONNX file or zoo name).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: rendering it with rich (markdown, panels) costs 0.2 s at every --help (measured)
    rich_markup_mode=None,
)


@app.callback()
def global_options(
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", min=1, envvar="SREVAL_MAX_PIXELS", help="Largest image (width x height) sreval decodes; larger ones are refused from their header (decompression bombs).")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", min=0.001, envvar="SREVAL_TIME_LIMIT", help="Seconds one onnxruntime run on an image may take (a model that loops on large inputs); none by default. Ctrl-C always stops a run.")] = None,
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", envvar="SREVAL_MAX_MEMORY", help="Most memory one untrusted input may make sreval allocate (a checkpoint, an architecture, external data, a dataset, one model run), e.g. 800M or 4G; default: half the available memory, at most 1 GiB.")] = None,
) -> None:
    """Adversarial robustness of super-resolution models (any ONNX file or zoo name)."""
    if max_pixels is not None:
        os.environ["SREVAL_MAX_PIXELS"] = str(max_pixels)
    if time_limit is not None:
        os.environ["SREVAL_TIME_LIMIT"] = str(time_limit)
    if max_memory is not None:
        try:
            parse_size(max_memory, "--max-memory")
        except SrevalError as e:
            raise typer.BadParameter(str(e)) from None
        os.environ["SREVAL_MAX_MEMORY"] = max_memory


for command in COMMANDS:  # the job commands (sreval.cli.jobs), then the others (sreval.cli.tools)
    app.command(command.__name__)(command)
app.add_typer(tools.zoo_app, name="zoo")


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main", "jobs", "tools"]
