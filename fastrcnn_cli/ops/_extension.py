"""Building and loading the native operators (C++ and CUDA sources in ``csrc/``): RoI pooling and friends.

The operators are compiled with :func:`torch.utils.cpp_extension.load` (ninja) and loaded into ``torch.ops.fastrcnn``.
They come as two shared libraries:

``fastrcnn_roi_pool`` (:data:`CPU_SOURCES`)
    The operator schemas (``TORCH_LIBRARY(fastrcnn, m)``) and the CPU kernels. Built on any device: about a
    minute on 2 cores.
``fastrcnn_roi_pool_cuda`` (:data:`CUDA_SOURCES`)
    The CUDA kernels, registered for the operators above. Built only where CUDA is wanted: by the first
    ``roi_pool`` call on a CUDA tensor, or on demand with ``load_extension(with_cuda=True)`` (this works with no
    GPU, which is how CI checks that the kernels compile). Needs a CUDA build of torch (``torch.version.cuda``)
    and a CUDA toolkit of the same major version (nvcc).

**Built once per machine and user.** Each library is compiled at most once per *build key*: the contents of its
sources and of every header in ``csrc/``, the torch version, the Python version and ABI, the platform, CPU or
CUDA (toolkit and GPU architectures), the compiler and the compiler flags. The build goes to
``<cache>/<library>-<python>-torch<version>-<key>/`` in a per-user cache (:func:`cache_root`), so every virtual
environment and every checkout with the same sources and torch shares one build; a change of anything in the
key gets a new folder, never a rebuild over a build in use. A build is compiled in a temporary folder next to
its final one and renamed into place only once complete (with ``build.json``: its key, size and build time), so
an interrupted or failed build is never loaded; a process that finds a finished build loads it without any
lock. Concurrent first uses wait on a file lock (an OS lock, released if its holder dies) for the one that
compiles. One line on stderr says when a compile starts and another how long it took; nothing is printed when a
cached build is loaded. ``fastrcnn build-ops`` compiles ahead of time (for images and offline machines).
If the build fails (no compiler, no ninja, a compiler error), :class:`~fastrcnn_cli.errors.BuildError` says why;
``roi_pool`` then warns once and falls back to the pure-PyTorch reference (same results, much slower).

Environment variables:

``FASTRCNN_EXTENSIONS_DIR``
    The cache folder. Default ``$XDG_CACHE_HOME/fastrcnn/ops``, else ``~/.cache/fastrcnn/ops``.
``FASTRCNN_BUILD_CUDA``
    ``auto`` (default): build the CUDA library on first use on a CUDA tensor. ``0``: never (CUDA tensors then
    use the slow reference, with a warning). ``1``: ``load_extension()`` builds it too, even with no GPU.
``FASTRCNN_BUILD_LOCK_TIMEOUT``
    Seconds to wait for another process's build (default 1200) before a BuildError names the lock file.
``TORCH_CUDA_ARCH_LIST``
    GPU architectures to compile for. When unset: the visible GPUs', else (no GPU) ``8.0;9.0+PTX``.
``CUDA_HOME``
    The CUDA toolkit; found from ``nvcc`` on the PATH or ``/usr/local/cuda`` when unset.
``CXX``, ``MAX_JOBS``
    The C++ compiler (part of the build key) and the number of parallel compile jobs.
``FASTRCNN_VERBOSE_BUILD=1``
    Show the compiler commands and output.
``FASTRCNN_ROI_POOL_CACHE_MB``
    Read by the CPU kernel: how much memory of freed large outputs (16 MB and more) it keeps for reuse, default
    1024; ``0`` turns the cache off (see ``csrc/roi_pool_cpu.cpp``).

The CUDA headers that ATen's CUDA headers include (``cusparse.h``, ``cublas_v2.h``) ship with torch's CUDA wheels
in ``site-packages/nvidia/cu13/include`` (or ``cu12``); that folder is added to the include path when it exists.

Importing this module imports torch but not ``torch._dynamo`` (a second or more): :func:`native_available` is
marked for ``torch.compile`` as ``torch.compiler.assume_constant_result`` would mark it, without importing the
compiler (:func:`_assume_constant_result`).
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
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from fastrcnn_cli import progress
from fastrcnn_cli.errors import BuildError

CSRC = Path(__file__).resolve().parent / "csrc"
CPU_LIBRARY = "fastrcnn_roi_pool"
CUDA_LIBRARY = "fastrcnn_roi_pool_cuda"
#: the sources of each library, in csrc/. A new operator adds its file here; every header in csrc/ is part of
#: the build key whether listed or not.
CPU_SOURCES = ("roi_pool.cpp", "roi_pool_cpu.cpp", "selective_search.cpp")
CUDA_SOURCES = ("roi_pool_cuda.cpp", "roi_pool_cuda.cu")
HEADER_SUFFIXES = (".h", ".hpp", ".cuh")
#: bump to invalidate every cached build (a change of the folder layout or of build.json)
CACHE_FORMAT = 1
BUILD_RECORD = "build.json"

#: Architectures compiled for when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset: A100 and H100 machine
#: code, and PTX that newer GPUs compile when loading.
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _assume_constant_result(fn):  # noqa: ANN001, ANN202
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo`` (a second or more at start-up).

    That decorator only sets this attribute (``torch._dynamo.decorators.assume_constant_result``); Dynamo reads it
    when it meets the function while tracing, calls the function eagerly and uses its result as a constant.
    tests/test_roi_pool.py checks that the attribute is still the one torch sets, and that a first call inside
    ``torch.compile(fullgraph=True)`` works.
    """
    fn._dynamo_marked_constant = True
    return fn


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


@_assume_constant_result
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
# the build cache


def cache_root() -> Path:
    """The per-user folder that holds one folder per build key (``FASTRCNN_EXTENSIONS_DIR`` overrides it)."""
    if os.environ.get("FASTRCNN_EXTENSIONS_DIR"):
        return Path(os.environ["FASTRCNN_EXTENSIONS_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fastrcnn" / "ops"


def _build_flags(with_cuda: bool) -> dict:
    flags: dict = {
        "extra_cflags": ["-O3", "-fopenmp"],
        "extra_ldflags": ["-fopenmp"],
        "extra_include_paths": [str(CSRC)],
    }
    if with_cuda:
        flags["extra_include_paths"].extend(str(p) for p in nvidia_include_dirs())
        flags["extra_cuda_cflags"] = ["-O3"]
    return flags


def _portable_flags(flags: dict) -> dict:
    """The flags with this checkout's and this environment's folders replaced by what they stand for, so that
    every checkout and virtual environment of the same sources and torch shares a build."""
    def portable(path: str) -> str:
        if Path(path) == CSRC:
            return "<csrc>"
        parts = Path(path).parts
        return "<nvidia>/" + "/".join(parts[-2:]) if "nvidia" in parts else path

    out = dict(flags)
    out["extra_include_paths"] = [portable(p) for p in flags.get("extra_include_paths", [])]
    return out


def _cuda_arch_list() -> str:
    """The GPU architectures a CUDA build compiles for (see ``TORCH_CUDA_ARCH_LIST`` in the module docstring)."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return DEFAULT_ARCH_LIST


def _source_files(sources: tuple[str, ...]) -> list[str]:
    headers = sorted(p.name for p in CSRC.iterdir() if p.suffix in HEADER_SUFFIXES)
    return [*sources, *(h for h in headers if h not in sources)]


def build_key(name: str, sources: tuple[str, ...], with_cuda: bool) -> dict:
    """Everything a build of library ``name`` depends on (see the module docstring). Never imports
    torch.utils.cpp_extension, so that loading a cached build stays cheap."""
    digest = hashlib.sha256()
    for file in _source_files(sources):
        digest.update(file.encode() + b"\0")
        try:
            digest.update((CSRC / file).read_bytes())
        except OSError as exc:
            raise BuildError(f"a source of the native operators is missing or unreadable: {exc}", CSRC / file) from None
        digest.update(b"\0")
    compiler = os.environ.get("CXX", "c++")
    key = {
        "format": CACHE_FORMAT,
        "library": name,
        "sources": digest.hexdigest(),
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", ""),
        "python": f"{sys.implementation.cache_tag}{getattr(sys, 'abiflags', '')}",
        "platform": sysconfig.get_platform(),
        "compiler": [compiler, os.path.realpath(shutil.which(compiler) or compiler)],
        "flags": _portable_flags(_build_flags(with_cuda)),
        "device": "cpu",
    }
    if with_cuda:
        home = find_cuda_home()
        key["device"] = f"cuda {torch.version.cuda}"
        key["cuda_toolkit"] = os.path.realpath(home) if home else None
        key["cuda_arch"] = _cuda_arch_list()
    return key


def build_folder(name: str, key: dict) -> Path:
    """``<cache>/<library>-<python>-torch<version>-<16 hex digits of the key>``: readable and unique per key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    torch_version = torch.__version__.replace("+", "_")
    return cache_root() / f"{name}-{sys.implementation.cache_tag}-torch{torch_version}-{digest}"


def _read_record(folder: Path) -> dict:
    try:
        return json.loads((folder / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _is_complete(folder: Path, name: str, key: dict) -> bool:
    """A finished build of this key: its record (written last, before the folder was renamed into place) names
    the same key, and the library is there with the recorded size."""
    record = _read_record(folder)
    library = folder / f"{name}.so"
    try:
        return record.get("key") == key and library.stat().st_size == record.get("bytes")
    except OSError:
        return False


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """An OS file lock for one build folder: a second process waits here while the first compiles."""
    lock = FileLock(str(folder.with_name(folder.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        timeout = float(os.environ.get("FASTRCNN_BUILD_LOCK_TIMEOUT", "1200"))
        progress.info(f"waiting for another process that is compiling the native operators ({folder.name})…")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise BuildError(
                f"another process has been compiling the native operators for more than {timeout:.0f} s (lock "
                f"{lock.lock_file}); if none is running, delete {folder} and its .lock file and try again"
            ) from None
    try:
        yield
    finally:
        lock.release()


def _discard(folder: Path) -> None:
    """Remove a build folder that must not be used (incomplete, damaged): renamed away first, so that no process
    ever sees it half deleted."""
    if not folder.exists():
        return
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}-{time.time_ns()}")
    with contextlib.suppress(OSError):
        folder.rename(trash)
        folder = trash
    shutil.rmtree(folder, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Temporary folders of interrupted builds of this key (called with its lock held, so none is in use)."""
    for stale in folder.parent.glob(f".tmp-{folder.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in folder.parent.glob(f".trash-{folder.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# building and loading


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


def _build_and_load(name: str, sources: tuple[str, ...], with_cuda: bool) -> None:
    """Load library ``name`` from the cache, compiling it first if this build key has no finished build."""
    key = build_key(name, sources, with_cuda)
    folder = build_folder(name, key)
    tried = _is_complete(folder, name, key)
    if tried and _load_library(name, folder, fail_quietly=True):
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the cache folder for the native operators: {exc}", folder.parent) from None
    with _build_lock(folder):
        # finished meanwhile by the process we waited for; a build that would not load is compiled again
        if not tried and _is_complete(folder, name, key) and _load_library(name, folder, fail_quietly=True):
            return
        _discard(folder)
        _remove_leftovers(folder)
        _compile(name, sources, with_cuda, key, folder)


def _load_library(name: str, folder: Path, fail_quietly: bool = False) -> bool:
    library = folder / f"{name}.so"
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as exc:
        if fail_quietly:
            progress.warn(f"the cached build {library} cannot be loaded ({exc}); compiling it again")
            return False
        raise BuildError(f"the freshly compiled {library} cannot be loaded: {exc}") from None
    _state.paths[name] = str(library)
    return True


def _compile(name: str, sources: tuple[str, ...], with_cuda: bool, key: dict, folder: Path) -> None:
    """Compile into a temporary folder next to ``folder``, record the build, rename it into place, load it."""
    cpp_extension = _cpp_extension()
    flags = _build_flags(with_cuda)
    verbose = os.environ.get("FASTRCNN_VERBOSE_BUILD", "") not in ("", "0")
    what = "the CUDA kernels of the native operators" if with_cuda else "the native operators (RoI pooling, C++)"
    with _build_environment(cpp_extension, with_cuda):
        _check_tools(cpp_extension)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        progress.info(
            f"compiling {what} for torch {torch.__version__}, Python {sys.version_info.major}."
            f"{sys.version_info.minor}: once per machine, about a minute on 2 cores (cache: {folder})…"
        )
        started = time.perf_counter()
        try:
            cpp_extension.load(
                name=name,
                sources=[str(CSRC / s) for s in sources],
                build_directory=str(tmp),
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=verbose,
                **flags,
            )
        except (RuntimeError, OSError, ImportError, ValueError, IndexError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildError(_explain_failure(name, exc, folder.with_name(folder.name + ".build-error.log"))) from None
        except BaseException:  # Ctrl-C: the temporary folder is never used; the next build removes it
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.perf_counter() - started
        built = _find_built_library(tmp, name)
        built.rename(tmp / f"{name}.so")  # torch names it name_vN when a process builds a name twice
        record = {
            "key": key,
            "bytes": (tmp / f"{name}.so").stat().st_size,
            "build_seconds": round(seconds, 1),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "built_by": sys.executable,
        }
        (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp made it private; the cache is the user's, readable as any cache
        os.replace(tmp, folder)  # atomic: other processes see no folder or a finished one
    _state.build_seconds[name] = seconds
    _state.paths[name] = str(folder / f"{name}.so")
    progress.info(f"compiled {what} in {seconds:.1f} s")


def _find_built_library(tmp: Path, name: str) -> Path:
    candidates = sorted(tmp.glob(f"{name}*.so"))
    if not candidates:
        raise BuildError(f"the build of {name} in {tmp} produced no library")
    return candidates[0]


@contextlib.contextmanager
def _build_environment(cpp_extension, with_cuda: bool) -> Iterator[None]:
    """PATH with this interpreter's bin folder (ninja of a venv that is not activated); for CUDA builds
    CUDA_HOME and, with no GPU visible, TORCH_CUDA_ARCH_LIST. Restored afterwards."""
    saved = {key: os.environ.get(key) for key in ("PATH", "CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
    saved_home = getattr(cpp_extension, "CUDA_HOME", None)
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
            os.environ["TORCH_CUDA_ARCH_LIST"] = _cuda_arch_list()
        yield
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
            f"no C++ compiler found (looked for {compiler!r}): the native operators are compiled once, on first "
            "use or with `fastrcnn build-ops`. Install g++ (e.g. apt-get install g++) or set CXX."
        )
    if shutil.which("ninja") is None:
        raise BuildError("ninja is not installed: the native operators are compiled with it. pip install ninja")


def _explain_failure(name: str, exc: BaseException, log: Path) -> str:
    text = str(exc).strip()
    lines = text.splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    shown = "\n".join((errors or lines)[-12:])
    with contextlib.suppress(OSError):
        log.write_text(text + "\n")
    return (
        f"could not build the native operators ({name}):\n{shown}\n"
        f"(full output in {log}; FASTRCNN_VERBOSE_BUILD=1 shows the compiler commands)"
    )


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        progress.warn(message)
