"""The files that ship inside the package: the demo model and its model card, and the example images.

In the repository they are the top-level folders ``weights/`` and ``examples/``; ``setup.py`` maps them to the
packages ``fastrcnn_cli.weights`` and ``fastrcnn_cli.examples``, so a wheel, an sdist and an editable install all
carry them, and they are found here through :mod:`importlib.resources`, never through a path relative to the
source tree.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
from pathlib import Path

WEIGHTS_PACKAGE = "fastrcnn_cli.weights"
EXAMPLES_PACKAGE = "fastrcnn_cli.examples"
#: the shipped demo model (see its model card, weights/README.md)
MODEL_FILE = "shapes-efficientnet-lite0.pt"
#: the example image of the README's main job and of ``fastrcnn benchmark``
DEFAULT_EXAMPLE = "shapes-1.jpg"

#: files extracted from a zipped install live until the process ends
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def _resource(package: str, name: str) -> Path:
    """A file of a resource package as a real path; the path does not exist when the package or file is absent."""
    try:
        ref = importlib.resources.files(package).joinpath(name)
    except ModuleNotFoundError:
        return Path(f"<{package} is not installed>") / name
    if isinstance(ref, Path):
        return ref
    if not ref.is_file():
        return Path(f"<{package}>") / name
    return _extracted.enter_context(importlib.resources.as_file(ref))


def model_path() -> Path:
    """The shipped demo model (a fastrcnn checkpoint)."""
    return _resource(WEIGHTS_PACKAGE, MODEL_FILE)


def example_path(name: str = DEFAULT_EXAMPLE) -> Path:
    """A shipped example image (``shapes-1.jpg``), or a file of its folder (``shapes-1.xml``,
    ``expected/shapes-1.json``)."""
    return _resource(EXAMPLES_PACKAGE, name)
