"""Engines on disk, the choice of engine, RPC settings, build flags and the engine's buffer log: unit tests.

Engines here are directories laid out as ``corral engine build`` leaves them, with a script in place of the binary
(never run: these tests start no process)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from corral.engines import build, catalog, rpc, select
from corral.engines.catalog import Engine
from corral.errors import EngineError
from corral.inference.runner import engines as runner_engines
from corral.inference.runner.placement import Placement, parse_buffer
from corral.inference.runner.process import server_flags
from corral.inference.runner.spec import LaunchSpec

VERSION = catalog.wheel_version()


def make_engine(home: Path, variant: str, *, version: str = VERSION, built: str = "2026-01-01T00:00:00+00:00",
                rpc_on: bool = False, backends: tuple[str, ...] = ("cpu",), flags: list[str] | None = None) -> Path:
    directory = home / "engines" / f"{version}-{variant}"
    (directory / "bin").mkdir(parents=True)
    for tool in ("llama-server", "llama-bench", *(["ggml-rpc-server"] if rpc_on else [])):
        (directory / "bin" / tool).write_text("#!/bin/sh\nexit 0\n")
        (directory / "bin" / tool).chmod(0o755)
    meta = {"version": version, "variant": variant, "backends": list(backends), "rpc": rpc_on, "native": True,
            "cpu_flags": sorted(catalog.cpu_flags()) if flags is None else flags, "built": built}
    (directory / "engine.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    for name in ("CORRAL_ENGINE", "CORRAL_LLAMA_SERVER", "CORRAL_RPC_SERVERS", "OLLAMA_HOME"):
        monkeypatch.delenv(name, raising=False)
    select.reset()
    yield tmp_path
    select.reset()


def test_variant_names() -> None:
    assert catalog.variant_name() == "cpu-native"
    assert catalog.variant_name(rpc=True) == "cpu-native+rpc"
    assert catalog.variant_name(cuda=True) == "cuda"
    assert catalog.variant_name(cuda=True, rpc=True) == "cuda+rpc"
    assert catalog.variant_name(vulkan=True, cuda=True) == "cuda+vulkan"
    assert catalog.variant_name(native=False) == "cpu"


def test_no_engine_built_means_the_wheel(home: Path) -> None:
    choice = select.choose()
    assert choice.engine is None and choice.label == "wheel"
    assert "wheel" in choice.describe() and VERSION in choice.describe()


def test_the_best_engine_present_is_chosen(home: Path) -> None:
    make_engine(home, "cpu-native", built="2026-01-01T00:00:00+00:00")
    make_engine(home, "cpu-native+rpc", rpc_on=True, built="2026-02-01T00:00:00+00:00")
    choice = select.choose()
    assert choice.engine is not None and choice.engine.variant == "cpu-native+rpc"  # the newer build
    assert choice.label == "cpu-native+rpc"
    assert str(choice.engine.server).endswith("bin/llama-server")
    assert choice.engine.tool(catalog.RPC_SERVER) is not None and choice.engine.tool(catalog.BENCH) is not None


def test_engines_this_machine_cannot_use_are_passed_over(home: Path) -> None:
    make_engine(home, "cpu-native", flags=[*sorted(catalog.cpu_flags()), "avx512_future_extension"])
    make_engine(home, "cpu-native+rpc", version="1999.1.1", rpc_on=True)
    make_engine(home, "cuda", backends=("cpu", "cuda"))  # no NVIDIA device in a test environment
    engine, skipped = select.best_installed()
    assert engine is None
    reasons = dict(skipped)
    assert "avx512_future_extension" in reasons[f"{VERSION}-cpu-native"]
    assert "1999.1.1" in reasons["1999.1.1-cpu-native+rpc"]
    assert reasons[f"{VERSION}-cuda"] == "no cuda device found"
    assert select.choose().engine is None


def test_rpc_servers_require_a_build_with_rpc(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_engine(home, "cpu-native", built="2026-03-01T00:00:00+00:00")
    make_engine(home, "cpu-native+rpc", rpc_on=True, built="2026-01-01T00:00:00+00:00")
    assert select.choose().label == "cpu-native"
    monkeypatch.setenv("CORRAL_RPC_SERVERS", "127.0.0.1:50052")
    assert select.choose().label == "cpu-native+rpc"


def test_corral_engine_names_an_engine_by_name_variant_or_path(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = make_engine(home, "cpu-native+rpc", rpc_on=True)
    for value in (directory.name, "cpu-native+rpc", str(directory), str(directory / "bin" / "llama-server")):
        monkeypatch.setenv("CORRAL_ENGINE", value)
        choice = select.choose()
        assert choice.engine is not None and choice.reason == "CORRAL_ENGINE"
        assert choice.engine.server == directory / "bin" / "llama-server"
    monkeypatch.setenv("CORRAL_ENGINE", "wheel")
    assert select.choose().engine is None
    monkeypatch.setenv("CORRAL_ENGINE", "no-such-engine")
    with pytest.raises(EngineError, match=r"no such engine .*corral engine build"):
        select.choose()
    monkeypatch.setenv("CORRAL_ENGINE", str(home / "missing" / "llama-server"))
    with pytest.raises(EngineError, match="no llama-server there"):
        select.choose()


def test_corral_llama_server_keeps_working(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_LLAMA_SERVER", "/opt/llama/llama-server")
    choice = select.choose()
    assert choice.engine is not None and choice.engine.label == "external"
    assert choice.engine.server == Path("/opt/llama/llama-server") and choice.reason == "CORRAL_LLAMA_SERVER"


def test_an_engine_that_cannot_run_here_is_refused_by_name(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_engine(home, "cpu-native", flags=["avx512_future_extension"])
    monkeypatch.setenv("CORRAL_ENGINE", "cpu-native")
    with pytest.raises(EngineError, match="cannot run here"):
        select.choose()


def test_rpc_server_lists() -> None:
    assert rpc.parse_servers("10.0.0.2:50052, 10.0.0.3:6000,,") == ["10.0.0.2:50052", "10.0.0.3:6000"]
    assert rpc.parse_servers("worker1") == ["worker1:50052"]
    assert rpc.parse_servers("[fd00::2]:7000,[fd00::3]") == ["[fd00::2]:7000", "[fd00::3]:50052"]
    for bad in ("host:port", "host:0", "host:70000", ":5000", "fd00::2:7000"):
        with pytest.raises(EngineError, match="CORRAL_RPC_SERVERS"):
            rpc.parse_servers(bad)


def test_rpc_split_gives_each_machine_an_equal_share() -> None:
    assert rpc.worker_layers(30, 0) == 0
    assert rpc.worker_layers(30, 1) == 16  # 31 layers with the output layer: 16 remote, 15 here
    assert rpc.worker_layers(30, 2) == 21
    assert rpc.worker_layers(3, 10) == 4  # never more than all of them
    assert rpc.worker_command(Path("/e/ggml-rpc-server"), "10.0.0.2", 50052, threads=4) == [
        "/e/ggml-rpc-server", "-H", "10.0.0.2", "-p", "50052", "-t", "4", "-c"]


def test_local_share_counts_only_the_layers_that_stay(tmp_path: Path) -> None:
    from corral.store.gguf_info import read_gguf_info
    from tests.conftest import SMOL_FILE, bundled_file

    info = read_gguf_info(bundled_file(*SMOL_FILE))
    spec = LaunchSpec(model="m", num_ctx=2048, parallel=1)
    assert runner_engines.local_share(3100, spec, info) == 3100
    two = LaunchSpec(model="m", num_ctx=2048, parallel=1, rpc=["a:1", "b:2"])
    assert runner_engines.local_share(3100, two, info) == 3100 * 10 // 31  # 21 of 31 layers on the workers


def test_binary_runner_flags_keep_the_key_off_the_command_line() -> None:
    spec = LaunchSpec(model="/m.gguf", num_ctx=2048, parallel=4, num_thread=2)
    args = server_flags(spec, "/e/llama-server", "/tmp/corral-runner-x/engine.sock", extra=["--rpc", "a:1"])
    assert args[args.index("--host") + 1] == "/tmp/corral-runner-x/engine.sock"
    assert args[args.index("--api-key-file") + 1] == "/dev/stdin"
    assert "--api-key" not in args
    assert args[args.index("-c") + 1] == "8192" and args[args.index("-ub") + 1] == "512"
    assert args[args.index("--rpc") + 1] == "a:1"
    embed = server_flags(LaunchSpec(model="/e.gguf", num_ctx=2048, parallel=1, num_batch=2048, embedding=True),
                         "x", "e.sock")
    assert embed[embed.index("-ub") + 1] == "2048"  # as the wheel's runner: a whole input in one micro-batch
    tcp = server_flags(spec, "x", "127.0.0.1:8080")
    assert tcp[tcp.index("--host") + 1] == "127.0.0.1" and tcp[tcp.index("--port") + 1] == "8080"


def test_cmake_flags_per_variant() -> None:
    cpu = build.cmake_args(build.BuildOptions(version="v"))
    assert "-DGGML_NATIVE=ON" in cpu and "-DGGML_RPC=OFF" in cpu and "-DBUILD_SHARED_LIBS=OFF" in cpu
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in cpu  # nothing downloaded at build time
    with_rpc = build.BuildOptions(version="v", rpc=True)
    assert "-DGGML_RPC=ON" in build.cmake_args(with_rpc)
    assert with_rpc.targets == ["llama-server", "ggml-rpc-server", "llama-bench"]
    assert with_rpc.name == "v-cpu-native+rpc"
    vulkan = build.cmake_args(build.BuildOptions(version="v", vulkan=True))
    assert "-DGGML_VULKAN=ON" in vulkan and "-DGGML_CUDA=OFF" in vulkan
    cuda = build.cmake_args(build.BuildOptions(version="v", cuda=True), cuda_root=Path("/opt/cuda"))
    assert "-DGGML_CUDA=ON" in cuda and "-DCUDAToolkit_ROOT=/opt/cuda" in cuda
    assert any(a.startswith("-DCMAKE_CUDA_ARCHITECTURES=") for a in cuda)


def test_no_compiler_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(EngineError) as caught:
        build.find_compiler()
    assert "\n" not in str(caught.value) and "apt-get install build-essential" in str(caught.value)


def test_only_llama_cpp_is_unpacked_from_the_sdist(tmp_path: Path) -> None:
    archive = tmp_path / "xllamacpp-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("xllamacpp-1.0/setup.py", b"x"), ("xllamacpp-1.0/thirdparty/llama.cpp/CMakeLists.txt",
                                                             b"cmake"),
                           ("xllamacpp-1.0/thirdparty/llama.cpp/src/llama.cpp", b"code")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("xllamacpp-1.0/thirdparty/llama.cpp/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "out"
    with pytest.raises(tarfile.FilterError):  # a link out of the tree is refused
        build._extract_llama_cpp(archive, dest)
    with tarfile.open(archive) as tar:
        kept = [m for m in tar.getmembers() if not m.issym()]
    clean = tmp_path / "clean.tar.gz"
    with tarfile.open(clean, "w:gz") as tar, tarfile.open(archive) as src:
        for member in kept:
            tar.addfile(member, src.extractfile(member))
    build._extract_llama_cpp(clean, tmp_path / "ok")
    assert sorted(str(p.relative_to(tmp_path / "ok")) for p in (tmp_path / "ok").rglob("*") if p.is_file()) == [
        "CMakeLists.txt", "src/llama.cpp"]


def test_remove_refuses_what_is_not_an_engine(home: Path) -> None:
    directory = make_engine(home, "cpu-native")
    with pytest.raises(EngineError, match="not found"):
        build.remove("../etc")
    with pytest.raises(EngineError, match="not found"):
        build.remove("nothing")
    assert build.remove(directory.name) == directory and not directory.exists()
    assert catalog.installed() == []


# Lines in llama.cpp's format (-lv 4): a load split over two RPC workers (each names its device RPC0[endpoint]), with
# a CUDA device's and pinned host memory's buffers added.
LOAD_LOG = """\
load_tensors: offloaded 21/31 layers to GPU
load_tensors:   CPU_Mapped model buffer size =    37.20 MiB
load_tensors: RPC0[127.0.0.1:50101] model buffer size =    28.83 MiB
load_tensors: RPC0[127.0.0.1:50102] model buffer size =    37.34 MiB
llama_context:        CPU  output buffer size =     1.95 MiB
llama_kv_cache:        CPU KV buffer size =    30.00 MiB
llama_kv_cache: RPC0[127.0.0.1:50101] KV buffer size =    30.00 MiB
sched_reserve:  CUDA_Host compute buffer size =     4.01 MiB
sched_reserve:      CUDA0 compute buffer size =   120.00 MiB
srv  load_model: the buffer size = 12 is not a buffer line
"""


def test_the_engines_buffer_log_says_where_the_model_is() -> None:
    assert parse_buffer("load_tensors:   CPU_Mapped model buffer size =    37.20 MiB") == ("CPU_Mapped",
                                                                                         int(37.20 * (1 << 20)))
    placement = Placement()
    for line in LOAD_LOG.splitlines():
        placement.add_line(line)
    shares = dict(placement.shares())
    assert set(shares) == {"CPU", "RPC0[127.0.0.1:50101]", "RPC0[127.0.0.1:50102]", "CUDA0"}
    assert shares["CPU"] == sum(int(x * (1 << 20)) for x in (37.20, 1.95, 30.00, 4.01))
    assert placement.size_vram == 120 * (1 << 20)  # only CUDA0 is GPU memory; RPC workers and host buffers are not
    assert Placement(planned_vram=5).size_vram == 5  # the plan stands in until the engine has said


def test_engine_dataclass_runs_here_checks_the_binary(tmp_path: Path) -> None:
    missing = Engine(name="x", server=tmp_path / "llama-server")
    assert "missing" in (missing.runs_here() or "")


def test_a_worker_beyond_loopback_is_warned_about() -> None:
    from corral.cli.engine import exposure_warning

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host, 50052) is None
    for host in ("0.0.0.0", "10.0.0.2", "worker.lan", "::"):
        warning = exposure_warning(host, 50052)
        assert warning is not None and "no authentication" in warning and "private network" in warning
