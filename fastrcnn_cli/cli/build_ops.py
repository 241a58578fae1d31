"""``fastrcnn build-ops``: compile the native operators ahead of time (:mod:`fastrcnn_cli.ops._extension`)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from fastrcnn_cli.cli.app import JsonOption, command, examples


@command(
    "build-ops",
    epilog=examples(
        "fastrcnn build-ops          [dim]# the CPU operators (and the CUDA ones when a GPU is visible)[/dim]",
        "fastrcnn build-ops --cuda   [dim]# the CUDA kernels too, even with no GPU (a Docker build)[/dim]",
        "FASTRCNN_EXTENSIONS_DIR=/opt/fastrcnn-ops fastrcnn build-ops   [dim]# a cache folder for an image[/dim]",
    ),
)
def build_ops(
    cuda: Annotated[
        bool | None,
        typer.Option(
            "--cuda/--no-cuda", help="Build the CUDA kernels too (default: when a GPU is visible).", show_default=False
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Compile the native operators (RoI pooling, in C++ and CUDA) now, instead of on first use.

    Builds are cached per user (FASTRCNN_EXTENSIONS_DIR, default ~/.cache/fastrcnn/ops), once per set of
    operator sources, torch version, Python version, CPU or CUDA, compiler and flags: every virtual environment
    and checkout of the same version shares them. A build that is already there is only loaded. Useful for
    container images and machines that must not compile at run time.
    """
    from fastrcnn_cli.console import err, print_json
    from fastrcnn_cli.ops import _extension

    started = time.perf_counter()
    state = _extension.load_extension(with_cuda=cuda)
    libraries = []
    for name, path in state.paths.items():
        seconds = state.build_seconds.get(name)
        libraries.append({"library": name, "path": path, "compiled": seconds is not None, "build_seconds": seconds})
    report = {"cache": str(_extension.cache_root()), "libraries": libraries,
              "seconds": round(time.perf_counter() - started, 2), "cuda": state.cuda}
    if json_:
        print_json(report)
        return
    for lib in libraries:
        how = f"compiled in {lib['build_seconds']:.1f} s" if lib["compiled"] else "already built, loaded"
        err.print(f"{lib['library']}: {how}: {lib['path']}", markup=False, highlight=False, soft_wrap=True)
