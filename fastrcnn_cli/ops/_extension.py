"""Building and loading the native RoI pooling operator (C++ and CUDA sources in ``csrc/``).

The operator is compiled on first use with :func:`torch.utils.cpp_extension.load` (ninja) and loaded into
``torch.ops.fastrcnn``. It comes as two shared libraries:

``fastrcnn_roi_pool`` (``roi_pool.cpp``, ``roi_pool_cpu.cpp``)
    The operator schemas (``TORCH_LIBRARY(fastrcnn, m)``) and the CPU kernels. Built by the first
    :func:`~fastrcnn_cli.ops.roi_pool` call, on any device: about a minute on 2 cores.
``fastrcnn_roi_pool_cuda`` (``roi_pool_cuda.cpp``, ``roi_pool_cuda.cu``)
    The CUDA kernels, registered for the operators above. Built only where CUDA is wanted: by the first
    ``roi_pool`` call on a CUDA tensor, or on demand with ``load_extension(with_cuda=True)`` (this works with no
    GPU, which is how CI checks that the kernels compile). Needs a CUDA build of torch (``torch.version.cuda``)
    and a CUDA toolkit of the same major version (nvcc). About a minute (the ``.cu`` file includes no ATen
    header); CPU-only users never wait for nvcc, GPU users wait once.

Builds are cached: a second process loads the compiled library in about a second; ninja recompiles only what
changed (sources, flags, torch headers). While something must be compiled, one line on stderr says so.
If the build fails (no compiler, no ninja, a compiler error), :class:`~fastrcnn_cli.errors.BuildError` says why;
``roi_pool`` then warns once and falls back to the pure-PyTorch reference (same results, much slower).

Environment variables:

``FASTRCNN_EXTENSIONS_DIR``
    Folder for the builds (one subfolder per library). Default: torch's, i.e. ``TORCH_EXTENSIONS_DIR`` or
    ``~/.cache/torch_extensions/py<version>_<cuda>/``.
``FASTRCNN_BUILD_CUDA``
    ``auto`` (default): build the CUDA library on first use on a CUDA tensor. ``0``: never (CUDA tensors then
    use the slow reference, with a warning). ``1``: ``load_extension()`` builds it too, even with no GPU.
``TORCH_CUDA_ARCH_LIST``
    GPU architectures to compile for. When unset and no GPU is visible, it is set to ``8.0;9.0+PTX`` for the
    build (torch's detection needs a GPU). With a GPU, torch compiles for the visible ones.
``CUDA_HOME``
    The CUDA toolkit; found from ``nvcc`` on the PATH or ``/usr/local/cuda`` when unset.
``CXX``, ``MAX_JOBS``
    The C++ compiler and the number of parallel compile jobs, as for any torch extension.
``FASTRCNN_VERBOSE_BUILD=1``
    Show the compiler commands and output.
``FASTRCNN_ROI_POOL_CACHE_MB``
    Read by the CPU kernel: how much memory of freed large outputs (16 MB and more) it keeps for reuse, default
    1024; ``0`` turns the cache off (see ``csrc/roi_pool_cpu.cpp``).

The CUDA headers that ATen's CUDA headers include (``cusparse.h``, ``cublas_v2.h``) ship with torch's CUDA wheels
in ``site-packages/nvidia/cu13/include`` (or ``cu12``); that folder is added to the include path when it exists.

A crashed build can leave a ``lock`` file in the build folder. Recent torch locks with an OS lock that dies with
its process, so the file is harmless; older torch waits while the file exists: a lock file older than an hour
is then removed with a warning, and a younger one is waited for at most ``FASTRCNN_BUILD_LOCK_TIMEOUT`` seconds
(default 1200) before a BuildError names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastrcnn_cli import console
from fastrcnn_cli.errors import BuildError

CSRC = Path(__file__).resolve().parent / "csrc"
CPU_LIBRARY = "fastrcnn_roi_pool"
CUDA_LIBRARY = "fastrcnn_roi_pool_cuda"
CPU_SOURCES = ("roi_pool.cpp", "roi_pool_cpu.cpp")
CUDA_SOURCES = ("roi_pool_cuda.cpp", "roi_pool_cuda.cu")
HEADERS = ("roi_pool_checks.h", "roi_pool_geometry.h", "roi_pool_cuda.h")

#: Architectures compiled for when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset: A100 and H100 machine
#: code, and PTX that newer GPUs compile when loading.
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
STALE_LOCK_SECONDS = 3600.0

#: Rough first-build times on a busy 2-core machine, for the notice.
_ESTIMATE = {CPU_LIBRARY: "under a minute", CUDA_LIBRARY: "about a minute"}


@dataclass
class ExtensionState:
    """What is loaded in this process. ``errors`` keeps the message of a failed build per library."""

    cpu: bool = False
    cuda: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


_state = ExtensionState()
_lock = threading.RLock()
_warned: set[str] = set()


def state() -> ExtensionState:
    """What has been loaded (or has failed to build) in this process."""
    return _state


# ----------------------------------------------------------------------------------------------------------
# public entry points


def load_extension(with_cuda: bool | None = None) -> ExtensionState:
    """Build (if needed) and load the RoI pooling operator into ``torch.ops.fastrcnn``.

    ``with_cuda``: ``True`` builds and loads the CUDA kernels too (no GPU needed to build them); ``False`` only
    the CPU library; ``None`` follows ``FASTRCNN_BUILD_CUDA`` (by default: the CUDA library too when a GPU is
    visible; if it cannot be built, a warning, and GPU tensors will use the reference). Raises
    :class:`BuildError` when the CPU library, or a CUDA library asked for with ``True``, cannot be built or loaded.
    """
    with _lock:
        _load_cpu()
        if with_cuda is None:
            if _cuda_policy() == "1" or (_cuda_policy() == "auto" and torch.cuda.is_available()):
                _load_for_device("cuda")
        elif with_cuda:
            _load_cuda()
        return _state


@torch.compiler.assume_constant_result
def native_available(device_type: str) -> bool:
    """True if the native kernels for ``device_type`` ("cpu", "cuda") are loaded, building them on first use.

    Never raises for a failed build: it warns once and returns False, and the caller falls back to the reference.
    Under ``torch.compile`` it runs once, eagerly, while the graph is traced (its answer is a constant there), so
    a first call inside a compiled function builds or loads the library without breaking the graph.
    """
    if device_type == "cpu" and _state.cpu:
        return True
    if device_type == "cuda" and _state.cuda:
        return True
    return _load_for_device(device_type)


@torch.compiler.disable
def _load_for_device(device_type: str) -> bool:
    if device_type not in ("cpu", "cuda"):
        return False
    with _lock:
        try:
            _load_cpu()
        except BuildError as exc:
            _warn_once(CPU_LIBRARY, f"{exc} Using the pure-PyTorch RoI pooling instead (much slower).")
            return False
        if device_type == "cpu":
            return True
        if _cuda_policy() == "0":
            _warn_once(
                "cuda-off",
                "FASTRCNN_BUILD_CUDA=0: RoI pooling on the GPU uses the pure-PyTorch reference (much slower).",
            )
            return False
        try:
            _load_cuda()
        except BuildError as exc:
            _warn_once(CUDA_LIBRARY, f"{exc} Using the pure-PyTorch RoI pooling on the GPU instead (slower).")
            return False
        return True


# ----------------------------------------------------------------------------------------------------------
# the two libraries


def _load_cpu() -> None:
    if _state.cpu:
        return
    if CPU_LIBRARY in _state.errors:
        raise BuildError(_state.errors[CPU_LIBRARY])
    try:
        _build_and_load(CPU_LIBRARY, CPU_SOURCES, with_cuda=False)
    except BuildError as exc:
        _state.errors[CPU_LIBRARY] = str(exc)
        raise
    _state.cpu = True
    # the module, not the function of the same name that fastrcnn_cli.ops exports
    importlib.import_module("fastrcnn_cli.ops.roi_pool")._register_python_parts()


def _load_cuda() -> None:
    if _state.cuda:
        return
    if CUDA_LIBRARY in _state.errors:
        raise BuildError(_state.errors[CUDA_LIBRARY])
    try:
        problem = cuda_build_problem()
        if problem:
            raise BuildError(f"cannot build the CUDA RoI pooling operator: {problem}.")
        _build_and_load(CUDA_LIBRARY, CUDA_SOURCES, with_cuda=True)
    except BuildError as exc:
        _state.errors[CUDA_LIBRARY] = str(exc)
        raise
    _state.cuda = True


def _cuda_policy() -> str:
    value = os.environ.get("FASTRCNN_BUILD_CUDA", "auto").strip().lower()
    if value in ("1", "yes", "true", "always", "on"):
        return "1"
    if value in ("0", "no", "false", "never", "off"):
        return "0"
    return "auto"


def cuda_build_problem() -> str | None:
    """Why the CUDA library cannot be built here, or None if it can."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is not built with CUDA"
    if torch.version.hip is not None:
        return "ROCm builds of torch are not supported"
    home = find_cuda_home()
    if home is None:
        return "no CUDA toolkit found (nvcc not on the PATH, CUDA_HOME not set, no /usr/local/cuda)"
    return None


def find_cuda_home() -> Path | None:
    """The CUDA toolkit folder (with bin/nvcc): CUDA_HOME, CUDA_PATH, nvcc on the PATH, /usr/local/cuda."""
    candidates: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc may be a symlink or a wrapper script (/usr/local/bin/nvcc -> exec /usr/local/cuda-X/bin/nvcc)
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime_api.h").exists():
            return home
    return None


def nvidia_include_dirs() -> list[Path]:
    """The CUDA library headers of torch's own CUDA wheels (site-packages/nvidia/cu*/include), if installed."""
    try:
        import nvidia  # namespace package of the nvidia-* wheels
    except ImportError:
        return []
    found: list[Path] = []
    for root in getattr(nvidia, "__path__", []):
        major = (torch.version.cuda or "").split(".")[0]
        preferred = Path(root) / f"cu{major}" / "include"
        if major and preferred.is_dir():
            found.append(preferred)
    return found


# ----------------------------------------------------------------------------------------------------------
# building


def _cpp_extension():
    """torch.utils.cpp_extension, imported without its 'No CUDA runtime is found' warning on GPU-less machines."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def build_root() -> Path:
    """The folder that holds one build folder per library."""
    if os.environ.get("FASTRCNN_EXTENSIONS_DIR"):
        return Path(os.environ["FASTRCNN_EXTENSIONS_DIR"]).expanduser()
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser()
    accel = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(_cpp_extension().get_default_build_root()) / f"{python}_{accel}"


def _build_flags(with_cuda: bool) -> dict:
    cflags = ["-O3", "-fopenmp"]
    include = [str(CSRC)]
    flags: dict = {
        "extra_cflags": cflags,
        "extra_ldflags": ["-fopenmp"],
        "extra_include_paths": include,
    }
    if with_cuda:
        include.extend(str(p) for p in nvidia_include_dirs())
        flags["extra_cuda_cflags"] = ["-O3"]
    return flags


def _fingerprint(name: str, sources: tuple[str, ...], flags: dict, arch: str | None) -> str:
    digest = hashlib.sha256()
    for part in (name, torch.__version__, sys.version, json.dumps(flags, sort_keys=True), arch or ""):
        digest.update(part.encode())
    for file in (*sources, *HEADERS):
        digest.update((CSRC / file).read_bytes())
    return digest.hexdigest()


def _build_and_load(name: str, sources: tuple[str, ...], with_cuda: bool) -> None:
    cpp_extension = _cpp_extension()
    flags = _build_flags(with_cuda)
    build_dir = build_root() / name
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the build folder for the RoI pooling operator: {exc}", build_dir) from None
    verbose = os.environ.get("FASTRCNN_VERBOSE_BUILD", "") not in ("", "0")
    with _build_environment(cpp_extension, with_cuda) as arch:
        _check_tools(cpp_extension)
        _wait_for_lock(cpp_extension, build_dir)
        fingerprint = _fingerprint(name, sources, flags, arch)
        stamp = build_dir / "fastrcnn-build.json"
        library = build_dir / f"{name}.so"
        fresh = library.exists() and _read_stamp(stamp).get("fingerprint") == fingerprint
        if not fresh:
            what = "the CUDA RoI pooling operator" if with_cuda else "the RoI pooling operator"
            console.info(f"compiling {what} (first use only, {_ESTIMATE[name]})…")
        started = time.perf_counter()
        try:
            cpp_extension.load(
                name=name,
                sources=[str(CSRC / s) for s in sources],
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=verbose,
                **flags,
            )
        except (RuntimeError, OSError, ImportError, ValueError, IndexError) as exc:
            raise BuildError(_explain_failure(name, exc, build_dir)) from None
        seconds = time.perf_counter() - started
        if not fresh:
            _state.build_seconds[name] = seconds
            _write_stamp(stamp, {"fingerprint": fingerprint, "build_seconds": round(seconds, 1), "arch": arch})
        _state.paths[name] = str(library)


@contextlib.contextmanager
def _build_environment(cpp_extension, with_cuda: bool) -> Iterator[str | None]:
    """PATH with this interpreter's bin folder (ninja of a venv that is not activated); for CUDA builds
    CUDA_HOME and, with no GPU visible, TORCH_CUDA_ARCH_LIST. Restored afterwards. Yields the arch list."""
    saved = {key: os.environ.get(key) for key in ("PATH", "CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
    saved_home = getattr(cpp_extension, "CUDA_HOME", None)
    arch = None
    try:
        bin_dirs = [str(Path(sys.executable).parent)]
        with contextlib.suppress(ImportError, AttributeError):
            import ninja  # the pip package

            bin_dirs.append(str(ninja.BIN_DIR))
        path = os.environ.get("PATH", "")
        extra = [d for d in bin_dirs if d not in path.split(os.pathsep)]
        os.environ["PATH"] = os.pathsep.join([*extra, path]) if path else os.pathsep.join(extra)
        if with_cuda:
            home = find_cuda_home()
            if home is not None:
                os.environ["CUDA_HOME"] = str(home)
                cpp_extension.CUDA_HOME = str(home)  # computed at import time, possibly wrongly (wrapper nvcc)
            if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
                os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
            arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or "visible GPUs"
        yield arch
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if with_cuda:
            cpp_extension.CUDA_HOME = saved_home


def _check_tools(cpp_extension) -> None:
    compiler = cpp_extension.get_cxx_compiler() if hasattr(cpp_extension, "get_cxx_compiler") else "c++"
    if shutil.which(compiler) is None:
        raise BuildError(
            f"no C++ compiler found (looked for {compiler!r}): the RoI pooling operator is compiled on first use. "
            "Install g++ (e.g. apt-get install g++) or set CXX."
        )
    if shutil.which("ninja") is None:
        raise BuildError("ninja is not installed: the RoI pooling operator is compiled with it. pip install ninja")


def _wait_for_lock(cpp_extension, build_dir: Path) -> None:
    lock = build_dir / "lock"
    if not lock.exists():
        return
    if hasattr(cpp_extension, "FileLock"):
        # an OS lock: the file alone means nothing; a held lock means another process is building
        try:
            from filelock import FileLock, Timeout

            with FileLock(str(lock), timeout=0):
                return
        except Timeout:
            console.info(f"waiting for another process that is building the RoI pooling operator ({lock})…")
        except Exception:  # noqa: BLE001 - the check is advisory only
            return
        return
    # older torch: the file's existence blocks every build
    age = time.time() - lock.stat().st_mtime
    if age > STALE_LOCK_SECONDS:
        console.warn(f"removing a stale lock file left by a crashed build ({lock}, {age / 3600:.1f} h old)")
        with contextlib.suppress(OSError):
            lock.unlink()
        return
    timeout = float(os.environ.get("FASTRCNN_BUILD_LOCK_TIMEOUT", "1200"))
    console.info(f"waiting for another build of the RoI pooling operator to finish (lock file {lock})…")
    waited = 0.0
    while lock.exists():
        if waited > timeout:
            raise BuildError(
                f"the build folder is locked by {lock} for more than {timeout:.0f} s. If no other build is "
                "running (a crashed build leaves this file behind), delete the file and try again."
            )
        time.sleep(0.5)
        waited += 0.5


def _explain_failure(name: str, exc: BaseException, build_dir: Path) -> str:
    text = str(exc).strip()
    lines = text.splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    shown = "\n".join((errors or lines)[-12:])
    log = build_dir / "build-error.log"
    with contextlib.suppress(OSError):
        log.write_text(text + "\n")
    return (
        f"could not build the native RoI pooling operator ({name}) in {build_dir}:\n{shown}\n"
        f"(full output in {log}; FASTRCNN_VERBOSE_BUILD=1 shows the compiler commands)"
    )


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(path: Path, data: dict) -> None:
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(data) + "\n")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        console.warn(message)
