"""Reading weights files without ever running code from them.

``torch.load(weights_only=False)`` unpickles arbitrary Python objects, and unpickling can call any function
the file names (``os.system``, ``open``, ...). fastrcnn therefore reads every weights file, checkpoint and
``--resume`` state with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain data (dicts,
lists, numbers, strings), or from a ``.safetensors`` file. There is no fallback: a file that holds other
pickled objects (a whole ``torch.save(model)``, a checkpoint with custom classes) is refused with the one-line
command that converts it, to be run by a user who trusts the file.

The errors say which of three things went wrong: the file holds pickled objects (refused, with the conversion
command), it is a damaged or truncated archive, or it is not a PyTorch file at all.
"""

from __future__ import annotations

import os
import pickle
import shlex
import zipfile
from pathlib import Path
from typing import Any

import torch

from fastrcnn_cli.errors import InputError

#: the one line that turns a trusted legacy file into a plain state dict (IN, OUT as arguments)
CONVERT_COMMAND = (
    'python -c "import sys, torch; o = torch.load(sys.argv[1], map_location=\'cpu\', weights_only=False); '
    "torch.save(o.state_dict() if hasattr(o, 'state_dict') else o, sys.argv[2])\" {src} {dst}"
)
_ZIP_MAGIC = b"PK\x03\x04"


def convert_command(path: str | os.PathLike) -> str:
    """The trusted one-line conversion of ``path`` to ``<stem>-state-dict.pt`` next to it."""
    path = Path(path)
    return CONVERT_COMMAND.format(src=_quote(path), dst=_quote(path.with_name(f"{path.stem}-state-dict.pt")))


def _quote(path: Path) -> str:
    return shlex.quote(str(path))


def _is_refused_pickle(exc: BaseException) -> bool:
    """True when torch's safe loader refused an object (the file is readable, but holds pickled code)."""
    text = str(exc)
    return isinstance(exc, pickle.UnpicklingError) and ("Weights only load failed" in text or "Unsupported global" in text)


def _refused(path: Path) -> str:
    return (
        "holds pickled Python objects, which fastrcnn never loads (unpickling can run any code from the file). "
        "If you trust this file, convert it once to a plain state dict with: " + convert_command(path)
    )


def describe_load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words a user can act on."""
    if _is_refused_pickle(exc):
        return _refused(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as os_exc:
        return f"cannot be read ({os_exc.strerror or os_exc})"
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            return "is truncated or corrupt (an incomplete archive: copy or download it again)"
        return f"is corrupt (its archive cannot be read: {type(exc).__name__}: {_first_line(exc)})"
    if os.path.getsize(path) == 0:
        return "is empty"
    if head[:1] == b"\x80":  # a pickle protocol header: torch's legacy (non-zip) format, cut short or damaged
        return f"is truncated or corrupt (legacy PyTorch format: {type(exc).__name__}: {_first_line(exc)})"
    return "is not a PyTorch weights file"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def _existing_file(path: str | os.PathLike, error: type[InputError]) -> Path:
    """``path`` as a Path, or ``error`` when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise error("no such file", path)
    if path.is_dir():
        raise error("is a folder, not a weights file", path)
    return path


def load_weights_file(path: str | os.PathLike, error: type[InputError] = InputError) -> Any:
    """The contents of a weights file (a ``torch.save`` of tensors and plain data, or ``.safetensors``), read
    without unpickling anything else. Raises ``error`` naming the file and saying what is wrong with it."""
    path = _existing_file(path, error)
    if path.suffix.lower() == ".safetensors":
        return _load_safetensors(path, error)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise error("is too large to load into memory", path) from None
    except OSError as exc:
        raise error(f"cannot be read ({exc.strerror or exc})", path) from None
    except Exception as exc:  # noqa: BLE001 - pickle refusals, broken zips, foreign files: all described
        raise error(describe_load_failure(path, exc), path) from None


def _load_safetensors(path: Path, error: type[InputError]) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise error("is a .safetensors file; install the 'safetensors' package to read it", path) from None
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # noqa: BLE001 - a damaged header or truncated data
        raise error(f"is not a readable .safetensors file ({_first_line(exc)})", path) from None


def check_weights_file(path: str | os.PathLike, error: type[InputError] = InputError) -> None:
    """Refuse a weights file that holds pickled objects or is damaged, before any long work, without loading
    its tensors when the format allows (the list of globals its pickle names is read from the archive)."""
    path = _existing_file(path, error)
    if path.suffix.lower() == ".safetensors":
        return
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - legacy format or damage: the full safe load says which
        load_weights_file(path, error)
        return
    if unsafe:
        raise error(_refused(path), path)
