"""Claims: runs that share a proposal cache share the work instead of each computing every image.

Before computing an image, a worker creates ``boxes/.<file>.claim`` with ``O_CREAT | O_EXCL`` (atomic: of
two processes, exactly one succeeds), holding its host name and pid. A worker of another run that finds a
live claim skips the image; its run comes back for it after its own images, and by then the file is usually
there. The claim is removed once the image's file is written, or the image failed (then the other run tries
it itself and reports the failure).

A claim whose owner is gone is taken over: on this host, when its pid no longer exists (``kill -9`` of a
run); from another host (a shared network folder), when older than :data:`FOREIGN_STALE_SECONDS`. Two
runs that take over one stale claim at the same instant may both compute the image: wasted time, never a
damaged file, since every cache file is written atomically.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

CLAIM_SUFFIX = ".claim"
#: a claim from another machine is trusted this long (its pid cannot be checked from here)
FOREIGN_STALE_SECONDS = 3600.0
#: a claim file still empty this long after its creation is a crash between create and write
EMPTY_STALE_SECONDS = 10.0


def claim_path(out_file: str | os.PathLike) -> Path:
    out_file = Path(out_file)
    return out_file.with_name(f".{out_file.name}{CLAIM_SUFFIX}")


@dataclass
class Claim:
    path: Path

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def is_active(path: str | os.PathLike) -> bool:
    """True while the claim at ``path`` exists and its owner may still be working on it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    try:
        owner = json.loads(text)
        host, pid = str(owner["host"]), int(owner["pid"])
    except (ValueError, KeyError, TypeError):
        return age < EMPTY_STALE_SECONDS
    if host == socket.gethostname():
        return _pid_alive(pid)
    return age < FOREIGN_STALE_SECONDS


def try_claim(out_file: str | os.PathLike) -> Claim | None:
    """Claim the image whose cache file is ``out_file``: a :class:`Claim` to release when done, or None when
    another live process holds it. Failing to create a claim at all (a read-only folder) gives a claim-less
    :class:`Claim`, so the image is computed and the real write reports the problem."""
    path = claim_path(out_file)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if is_active(path):
                return None
            try:
                os.unlink(path)  # the owner is gone: take over
            except FileNotFoundError:
                pass
            except OSError:
                return None
            continue
        except OSError:
            return Claim(path.with_name(path.name + ".none"))
        try:
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode())
        except OSError:
            pass
        finally:
            os.close(fd)
        return Claim(path)
    return None
