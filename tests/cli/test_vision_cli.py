"""Vision through the ``corral`` command: a Modelfile with ``FROM ./mmproj.gguf``, ``show``'s Projector section, and
image paths in a ``run`` prompt (tests/vision_fixture.py's projector on the bundled SmolLM2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODEL, SMOL_FILE, ServerProcess, bundled_file
from tests.vision_fixture import png_bytes, write_projector

pytestmark = pytest.mark.e2e


def corral(server: ServerProcess, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=server.env, cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture(scope="module")
def workdir(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a Modelfile (the bundled model plus ``FROM ./mmproj.gguf``), the model created from it,
    and three pictures."""
    work = tmp_path_factory.mktemp("vision-cli")
    write_projector(work / "mmproj.gguf", bundled_file(*SMOL_FILE))
    (work / "Modelfile").write_text(f"FROM {MODEL}\nFROM ./mmproj.gguf\nPARAMETER temperature 0\n"
                                    "PARAMETER num_predict 8\n")
    r = corral(server, work, "create", "vis-cli", "-f", "Modelfile")
    assert r.returncode == 0, r.stderr
    (work / "red.png").write_bytes(png_bytes(32, 32, (255, 0, 0)))
    (work / "blue.png").write_bytes(png_bytes(32, 32, (0, 0, 255)))
    (work / "my red.png").write_bytes(png_bytes(32, 32, (255, 0, 0)))
    return work


def test_show_prints_the_projector_section(server: ServerProcess, workdir: Path) -> None:
    r = corral(server, workdir, "show", "vis-cli")
    assert r.returncode == 0, r.stderr
    section = r.stdout.split("  Projector\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in section] == [
        ["architecture", "clip"], ["parameters", "245K"], ["embedding", "length", "64"], ["dimensions", "576"]]
    assert "vision" in r.stdout.split("  Capabilities\n", 1)[1].split("\n\n", 1)[0]


def test_run_attaches_the_images_named_in_the_prompt(server: ServerProcess, workdir: Path) -> None:
    red = corral(server, workdir, "run", "vis-cli", "describe ./red.png")
    assert red.returncode == 0, red.stderr
    assert "Added image './red.png'" in red.stderr
    again = corral(server, workdir, "run", "vis-cli", "describe ./my\\ red.png")  # an escaped space, as typed
    blue = corral(server, workdir, "run", "vis-cli", "describe ./blue.png")
    assert again.returncode == 0 and blue.returncode == 0, again.stderr + blue.stderr
    assert red.stdout.strip() and again.stdout == red.stdout  # the same picture: the same greedy answer
    assert blue.stdout != red.stdout
    # Without the image the model hears only "describe": the picture changed the answer.
    plain = corral(server, workdir, "run", "vis-cli", "describe")
    assert plain.returncode == 0 and plain.stdout != red.stdout


def test_run_says_which_file_it_cannot_attach(server: ServerProcess, workdir: Path) -> None:
    (workdir / "notes.png").write_text("not a picture")
    for prompt, message in (("describe ./missing.png", "Error: couldn't read image './missing.png': no such file"),
                            ("describe ./notes.png", "Error: invalid image type: ./notes.png (supported: PNG, JPEG, "
                                                     "GIF or BMP)")):
        r = corral(server, workdir, "run", "vis-cli", prompt)
        assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == message, r.stderr
        assert r.stdout == ""
