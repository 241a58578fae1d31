"""Where results may be written: never over an input, and only where writing works, checked before the work.

Every command checks each of its output locations with :func:`check_output_file` or
:func:`check_output_folder` before any long work starts, so that a typo in ``--save-json`` or a read-only
folder is reported in the first second, not after an hour of detection:

* an output that is the same file as an input (compared after resolving symlinks, and by inode for hard
  links) is refused, naming the flag;
* an output file that is an existing folder (or a folder that is an existing file) is refused;
* the folder the output goes into (or, when it does not exist yet, its nearest existing parent) must accept
  a new file: a probe file is created there and removed at once, so a read-only file system, missing
  permissions and a full disk are all found (``os.access`` would not see the first or the last).

The writes themselves are atomic (:func:`fastrcnn_cli.io.atomic_write`): a failure later on still leaves no
partial file and the previous one intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fastrcnn_cli.errors import OutputError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path (symlinks followed), or hard links."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist (yet)
        return False


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent."""
    current = path.expanduser().absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def probe_writable(folder: str | os.PathLike, shown: str | os.PathLike | None = None) -> None:
    """Raise :class:`OutputError` naming ``shown`` (default ``folder``) unless a file can be created in
    ``folder`` (or, if it does not exist yet, in its nearest existing parent) and the disk is not full."""
    folder = Path(folder)
    shown = folder if shown is None else shown
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise OutputError(f"cannot write there: {base} is a file, not a folder", shown)
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastrcnn-write-test.", suffix=".tmp", dir=base)
    except OSError as exc:
        raise OutputError(f"cannot write there ({exc.strerror or exc}; checked in {base})", shown) from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        return
    if free == 0:
        raise OutputError(f"cannot write there (No space left on device; checked in {base})", shown)


def _refuse_inputs(path: Path, inputs: Iterable[str | os.PathLike], flag: str) -> None:
    for source in inputs:
        if source is not None and same_file(path, source):
            shown = "" if Path(source) == path else f" ({source})"
            raise OutputError(f"{flag} would overwrite the input{shown}; choose another file", path)


def check_output_file(
    path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike | None] = ()
) -> Path:
    """Check that ``path`` (the value of ``flag``) can be written as a file and is none of ``inputs``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{flag} is a folder; give a file name", path)
    _refuse_inputs(path, [i for i in inputs if i is not None], flag)
    probe_writable(path.parent, path)
    return path


def check_output_folder(
    path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike | None] = ()
) -> Path:
    """Check that files can be written into the folder ``path`` (the value of ``flag``; created later if
    missing), and that it is none of ``inputs``."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} is an existing file, not a folder", path)
    _refuse_inputs(path, [i for i in inputs if i is not None], flag)
    probe_writable(path, path)
    return path
