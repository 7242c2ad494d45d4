"""``corral engine build``: llama.cpp's ``llama-server`` compiled for this machine, from the pinned wheel's sdist.

The source is the sdist of the installed ``xllamacpp`` (``pip download --no-binary :all: --no-deps``), whose
``thirdparty/llama.cpp`` is the llama.cpp the wheel itself was compiled from (``src/llama.cpp`` there only holds
copied headers), so a native engine and the wheel run the same code. Only that tree is unpacked, once per version,
under ``CORRAL_HOME/engines/.src/<version>/``. ``cmake`` and ``ninja`` come from the system, else from PyPI into a
venv of Corral's own under ``CORRAL_HOME/engines/.tools/``. The build directory is
``CORRAL_HOME/engines/.build/<name>/`` (kept with ``--keep-build``, so a rebuild is incremental); the engine is
installed by renaming a finished directory into place, so a half-built engine is never listed.

Only the needed targets are built (``llama-server``, ``ggml-rpc-server`` with RPC, ``llama-bench``), statically
linked (``BUILD_SHARED_LIBS=OFF``) so the binaries run from wherever they are copied. The web UI is neither built
(that needs npm) nor downloaded (the build would fetch it from Hugging Face); Corral has its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.engines import catalog
from corral.engines.catalog import BENCH, META, RPC_SERVER, SERVER, Engine
from corral.errors import EngineError

NO_COMPILER = ("no C++ compiler found: install one (Debian/Ubuntu: sudo apt-get install build-essential; "
               "Fedora: sudo dnf install gcc-c++; macOS: xcode-select --install), or set CXX")
MIN_CMAKE = (3, 14)

# (stage, done, total, line): stage is "source", "tools", "configure", "compile" or "install"; done/total count
# compile steps (0/0 elsewhere); line is the latest output line.
Progress = Callable[[str, int, int, str], None]


@dataclass
class BuildOptions:
    native: bool = True
    cuda: bool = False
    vulkan: bool = False
    rpc: bool = False
    jobs: int = 0  # 0: one per core
    source: Path | None = None  # a llama.cpp source tree to build instead of the wheel's sdist
    keep_build: bool = False
    force: bool = False  # rebuild even when the engine exists
    version: str = field(default_factory=catalog.wheel_version)

    @property
    def variant(self) -> str:
        return catalog.variant_name(native=self.native, cuda=self.cuda, vulkan=self.vulkan, rpc=self.rpc)

    @property
    def name(self) -> str:
        return f"{self.version or 'local'}-{self.variant}"

    @property
    def targets(self) -> list[str]:
        return [SERVER, *([RPC_SERVER] if self.rpc else []), BENCH]

    @property
    def backends(self) -> list[str]:
        return ["cpu", *(["cuda"] if self.cuda else []), *(["vulkan"] if self.vulkan else [])]


def cmake_args(opts: BuildOptions, cuda_root: Path | None = None) -> list[str]:
    """The configure flags for a variant."""
    on = {True: "ON", False: "OFF"}
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary per tool
        f"-DGGML_NATIVE={on[opts.native]}",  # -march=native: AVX-512, VNNI, AMX where this CPU has them
        f"-DGGML_RPC={on[opts.rpc]}",
        f"-DGGML_CUDA={on[opts.cuda]}",
        f"-DGGML_VULKAN={on[opts.vulkan]}",
        "-DLLAMA_OPENSSL=OFF",  # llama-server talks to Corral over a Unix socket; nothing needs TLS
        "-DLLAMA_BUILD_UI=OFF",  # needs npm
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the UI from Hugging Face at build time
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]
    if opts.cuda:
        # The GPUs present, else a spread of recent architectures (a build on a machine without its GPU)
        from corral.engines import gpu

        args.append("-DCMAKE_CUDA_ARCHITECTURES=" + ("native" if gpu.detect("cuda") else "75-virtual;80;86;89;90"))
        if cuda_root is not None:
            args += [f"-DCUDAToolkit_ROOT={cuda_root}", f"-DCMAKE_CUDA_COMPILER={cuda_root / 'bin' / 'nvcc'}"]
    return args


# -- tools ------------------------------------------------------------------------------------------------------------


def find_compiler() -> tuple[str, str]:
    """(C compiler, C++ compiler): ``CC``/``CXX`` when set, else the usual names on PATH."""
    cxx = os.environ.get("CXX") or next((shutil.which(n) for n in ("c++", "g++", "clang++") if shutil.which(n)), None)
    cc = os.environ.get("CC") or next((shutil.which(n) for n in ("cc", "gcc", "clang") if shutil.which(n)), None)
    if not cxx or not shutil.which(cxx) or not cc or not shutil.which(cc):
        raise EngineError(NO_COMPILER)
    return cc, cxx


def _version_of(tool: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def tools_dir() -> Path:
    return catalog.engines_dir() / ".tools"


def find_build_tools(progress: Progress) -> tuple[str, str | None]:
    """(cmake, ninja or None): the system's when recent enough, else installed from PyPI into Corral's tools venv."""
    cmake = shutil.which("cmake")
    ninja = shutil.which("ninja")
    if cmake and _version_of(cmake) >= MIN_CMAKE:
        return cmake, ninja
    venv = tools_dir()
    bin_dir = venv / "bin"
    if not (bin_dir / "cmake").is_file():
        progress("tools", 0, 0, f"installing cmake and ninja from PyPI into {venv}")
        _run([sys.executable, "-m", "venv", str(venv)], "could not create a venv for cmake")
        _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "cmake", "ninja"],
             "could not install cmake and ninja from PyPI")
    return str(bin_dir / "cmake"), str(bin_dir / "ninja") if (bin_dir / "ninja").is_file() else ninja


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    except OSError as exc:
        raise EngineError(f"{what}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise EngineError(f"{what}: {' / '.join(tail) or f'exit status {done.returncode}'}")
    return done.stdout


def cuda_toolkit(progress: Progress) -> Path | None:
    """A CUDA toolkit root: ``CUDA_PATH``/``CUDA_HOME``, ``nvcc`` on PATH, ``/usr/local/cuda``; else one assembled
    from NVIDIA's PyPI wheels (nvcc, the runtime, cuBLAS) in Corral's tools venv. None: let CMake look."""
    for env_name in ("CUDA_PATH", "CUDA_HOME"):
        value = os.environ.get(env_name)
        if value and (Path(value) / "bin" / "nvcc").exists():
            return Path(value)
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = Path(nvcc).resolve().parent.parent
        if _has_cublas(root):
            return root
    if _has_cublas(Path("/usr/local/cuda")):
        return Path("/usr/local/cuda")
    return _pypi_cuda(progress)


def _has_cublas(root: Path) -> bool:
    return (root / "bin" / "nvcc").exists() and any(
        (root / lib / "libcublas.so").exists() for lib in ("lib64", "lib", "targets/x86_64-linux/lib"))


# CUDA 13's wheels: the CUDA 12 compiler wheel (nvidia-cuda-nvcc-cu12 12.9.86) holds ptxas but no nvcc driver.
PYPI_CUDA = ["nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-runtime", "nvidia-cublas",
             "nvidia-cuda-cccl"]


def _pypi_cuda(progress: Progress) -> Path:
    """A toolkit directory (bin/, include/, lib64/) of links into NVIDIA's wheels, as CMake's FindCUDAToolkit wants."""
    venv = tools_dir()
    py = venv / "bin" / "python"
    if not py.is_file():
        _run([sys.executable, "-m", "venv", str(venv)], "could not create a venv for the CUDA toolkit")
    progress("tools", 0, 0, "installing the CUDA compiler, runtime and cuBLAS from PyPI (" + ", ".join(PYPI_CUDA) + ")")
    _run([str(py), "-m", "pip", "install", "-q", *PYPI_CUDA], "could not install the CUDA toolkit from PyPI")
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "venv").strip())
    nvidia = site / "nvidia"
    root = venv / "cuda"
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("bin", "include", "lib64", "nvvm"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    packages = [p for p in nvidia.iterdir() if p.is_dir() and not p.name.startswith("__")]
    for package in sorted([*packages, *(q for p in packages for q in p.iterdir() if (q / "bin").is_dir() or
                                        (q / "include").is_dir())]):
        for sub, dest in (("bin", "bin"), ("include", "include"), ("lib", "lib64"), ("nvvm", "nvvm")):
            src = package / sub
            if not src.is_dir():
                continue
            for item in src.iterdir():
                link = root / dest / item.name
                if not link.exists():
                    link.symlink_to(item)
    for lib in (root / "lib64").glob("*.so.*"):  # the wheels ship only versioned names; the linker wants plain ones
        plain = root / "lib64" / (lib.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(lib)
    if not (root / "bin" / "nvcc").exists():
        raise EngineError("NVIDIA's PyPI wheels gave no nvcc here: install a CUDA toolkit (developer.nvidia.com/cuda) "
                          "and set CUDA_PATH")
    return root


# -- source -----------------------------------------------------------------------------------------------------------


def fetch_source(version: str, progress: Progress) -> Path:
    """The llama.cpp tree of ``xllamacpp==version``'s sdist, unpacked once under ``engines/.src/<version>``."""
    if not version:
        raise EngineError("xllamacpp is not installed, so there is no pinned llama.cpp to build (or pass --source)")
    root = catalog.engines_dir() / ".src"
    dest = root / version
    if (dest / "CMakeLists.txt").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        progress("source", 0, 0, f"downloading the xllamacpp {version} sdist (llama.cpp's source, ~40 MB)")
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
              f"xllamacpp=={version}", "-d", tmp], f"could not download the xllamacpp {version} sdist")
        archives = list(Path(tmp).glob("xllamacpp-*.tar.gz"))
        if not archives:
            raise EngineError(f"pip downloaded no sdist of xllamacpp {version}")
        progress("source", 0, 0, "unpacking llama.cpp")
        unpacked = Path(tmp) / "llama.cpp"
        _extract_llama_cpp(archives[0], unpacked)
        if not (unpacked / "CMakeLists.txt").is_file():
            raise EngineError(f"the xllamacpp {version} sdist has no thirdparty/llama.cpp")
        shutil.rmtree(dest, ignore_errors=True)
        unpacked.rename(dest)
    return dest


def _extract_llama_cpp(archive: Path, dest: Path) -> None:
    """Only ``<top>/thirdparty/llama.cpp/``, with tarfile's ``data`` filter (no links out, no devices)."""
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            parts = member.name.split("/", 3)
            if len(parts) == 4 and parts[1:3] == ["thirdparty", "llama.cpp"]:
                member.name = parts[3]
                members.append(member)
        dest.mkdir(parents=True)
        tar.extractall(dest, members=members, filter="data")


# -- the build --------------------------------------------------------------------------------------------------------


_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_STEP = re.compile(r"^\[\s*(\d+)%\]")


def build(opts: BuildOptions, progress: Progress) -> Engine:
    """Build and install one engine; returns it. Raises EngineError with a one-line reason (and the log's path)."""
    started = time.monotonic()
    dest = catalog.engines_dir() / opts.name
    if (dest / META).is_file() and not opts.force:
        return catalog.load(dest)
    cc, cxx = find_compiler()
    lock_dir = catalog.engines_dir() / ".build"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{opts.name}.lock", "w") as lock:
        if _busy(lock):
            progress("source", 0, 0, "waiting for another build of the same engine")
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build per engine at a time; the kernel releases it if we die
        if (dest / META).is_file() and not opts.force:  # built by the one we waited for
            return catalog.load(dest)
        return _build_locked(opts, dest, cc, cxx, progress, started)


def _busy(lock: object) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
    except BlockingIOError:
        return True
    return False


def _build_locked(opts: BuildOptions, dest: Path, cc: str, cxx: str, progress: Progress, started: float) -> Engine:
    cmake, ninja = find_build_tools(progress)
    source = opts.source.resolve() if opts.source else fetch_source(opts.version, progress)
    if not (source / "CMakeLists.txt").is_file():
        raise EngineError(f"{source} is not a llama.cpp source tree (no CMakeLists.txt)")
    cuda_root = cuda_toolkit(progress) if opts.cuda else None
    build_dir = catalog.engines_dir() / ".build" / opts.name
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = build_dir / "corral-build.log"
    env = {**os.environ, "CC": cc, "CXX": cxx}
    if ninja:
        env["CMAKE_MAKE_PROGRAM"] = ninja
    jobs = opts.jobs or os.cpu_count() or 1
    with open(log_path, "w") as log:
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
        progress("configure", 0, 0, "cmake " + " ".join(cmake_args(opts, cuda_root)))
        _stream([cmake, "-S", str(source), "-B", str(build_dir), *generator, *cmake_args(opts, cuda_root)],
                env, log, log_path, "configure", progress)
        _stream([cmake, "--build", str(build_dir), "-j", str(jobs), "--target", *opts.targets],
                env, log, log_path, "compile", progress)
    progress("install", 0, 0, f"installing into {dest}")
    engine = _install(opts, build_dir, dest, cxx, time.monotonic() - started)
    if not opts.keep_build:
        shutil.rmtree(build_dir, ignore_errors=True)
    return engine


def _stream(cmd: list[str], env: dict[str, str], log: object, log_path: Path, stage: str,
            progress: Progress) -> None:
    """Run a build step, logging every line and reporting ``[n/N]`` (ninja) or ``[ p%]`` (make) progress."""
    assert hasattr(log, "write")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            errors="replace", stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    last_error = ""
    try:
        for line in proc.stdout:
            log.write(line)  # type: ignore[attr-defined]
            text = line.rstrip()
            if "error" in text.lower() and not text.startswith("--"):
                last_error = last_error or text
            if match := _STEP.match(text):
                progress(stage, int(match.group(1)), int(match.group(2)), text)
            elif match := _MAKE_STEP.match(text):
                progress(stage, int(match.group(1)), 100, text)
            else:
                progress(stage, 0, 0, text)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        reason = last_error[:300] or f"exit status {code}"
        raise EngineError(f"the {stage} step failed: {reason} (full log: {log_path})")


def _install(opts: BuildOptions, build_dir: Path, dest: Path, cxx: str, seconds: float) -> Engine:
    """Copy the binaries into a fresh directory, check the server runs here, write engine.json, rename into place."""
    staging = Path(tempfile.mkdtemp(dir=catalog.engines_dir(), prefix=f".install-{opts.name}-"))
    try:
        (staging / "bin").mkdir()
        for target in opts.targets:
            built = build_dir / "bin" / target
            if not built.is_file():
                raise EngineError(f"the build produced no {target} (log: {build_dir / 'corral-build.log'})")
            shutil.copy2(built, staging / "bin" / target)
        server = staging / "bin" / SERVER
        try:
            version = subprocess.run([str(server), "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise EngineError(f"the built llama-server does not run: {exc}") from None
        if version.returncode != 0:
            raise EngineError(f"the built llama-server does not run here (exit status {version.returncode})")
        meta = {
            "version": opts.version,
            "variant": opts.variant,
            "backends": opts.backends,
            "rpc": opts.rpc,
            "native": opts.native,
            "cpu_flags": sorted(catalog.cpu_flags()) if opts.native else [],
            "cmake_args": cmake_args(opts),
            "compiler": _compiler_id(cxx),
            "source": str(opts.source) if opts.source else f"xllamacpp {opts.version} sdist",
            "built": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "build_seconds": round(seconds),
            "server_version": (version.stdout + version.stderr).strip().splitlines()[-1:] or [""],
        }
        (staging / META).write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(staging, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    return catalog.load(dest)


def _compiler_id(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return cxx
    return out.splitlines()[0].strip() if out else cxx


def remove(name: str) -> Path:
    """Delete an installed engine (and a kept build directory of the same name)."""
    root = catalog.engines_dir()
    target = root / name
    if "/" in name or name.startswith(".") or not (target / META).is_file():
        raise EngineError(f"engine '{name}' not found ('corral engine list' shows the built ones)")
    shutil.rmtree(target)
    shutil.rmtree(root / ".build" / name, ignore_errors=True)
    return target
