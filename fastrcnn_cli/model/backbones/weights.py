"""What the backbones' ImageNet weights files share: whether downloading is allowed, and unwrapping a state dict.

The files themselves are read with :func:`fastrcnn_cli.model.safe_load.load_weights_file` (torch's safe loader,
or ``.safetensors``): a whole pickled model is refused with the one-line command that converts a trusted file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: set to 1 to forbid any download (tests, air-gapped machines); weights must then be local
OFFLINE_ENV = "FASTRCNN_OFFLINE"


def downloads_allowed() -> bool:
    """False when the environment variable ``FASTRCNN_OFFLINE`` is set to 1 / true / yes."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def unwrap_state_dict(obj: Any) -> Any:
    """The state dict inside a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper; ``obj`` otherwise."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
    return obj
