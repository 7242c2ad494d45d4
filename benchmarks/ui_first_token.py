"""Time to the first answer text: the web chat in headless Chromium against ``corral run``, same server, same prompt.

Not a test (no wall-clock assertions in the suite); run it by hand and copy the table into docs/ui.md:

    python -m benchmarks.ui_first_token [--runs 9] [--threads 2]

The model is loaded, and one untimed round warms every client up, before the first run. Each round runs the three
clients back to back, so they share the machine's noise:
- page: in the page, from the click on Send to the first frame after the answer's first text reached the DOM
  (a MutationObserver on #messages, then requestAnimationFrame);
- cli: ``corral run smollm2:135m "<prompt>"`` from process start to its first byte on stdout (what a user waits for,
  interpreter start-up included);
- api: for reference, a bare ``httpx`` stream of ``/api/chat`` from the request to its first content line.
Each answer is cut after its first text (Stop in the page, SIGKILL for the CLI, closing the stream) and the next run
waits until ``/api/ps`` shows no busy slot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import MODEL, running_server

from tests.browser import browser

PROMPT = "Why is the sky blue?"

PAGE_RUN = """
const done = arguments[arguments.length - 1];
const prompt = document.querySelector('#prompt');
prompt.value = arguments[0];
const before = document.querySelectorAll('#messages .msg.assistant').length;
const observer = new MutationObserver(() => {
  const answers = document.querySelectorAll('#messages .msg.assistant');
  if (answers.length <= before) return;
  const last = answers[answers.length - 1];
  if (!last.querySelector('.content').textContent) return;
  observer.disconnect();
  requestAnimationFrame(() => done(performance.now() - t0));
});
observer.observe(document.querySelector('#messages'), {childList: true, subtree: true, characterData: true});
const t0 = performance.now();
document.querySelector('#send').click();
"""


def idle(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        models = httpx.get(url + "/api/ps").json()["models"]
        if not any(m.get("slots_busy") for m in models):
            return
        time.sleep(0.05)
    raise RuntimeError("a slot stayed busy")


def cli_first_output(env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "corral", "run", MODEL, PROMPT], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if not first:
        raise RuntimeError("corral run printed nothing")
    return elapsed


def api_first_content(url: str) -> float:
    start = time.perf_counter()
    with httpx.stream("POST", url + "/api/chat", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}) as response:
        for line in response.iter_lines():
            if line and json.loads(line).get("message", {}).get("content"):
                return time.perf_counter() - start
    raise RuntimeError("no content")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", default="2")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"page": [], "cli": [], "api": []}
    with TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        env = {"CORRAL_NUM_THREADS": args.threads, "CORRAL_NUM_PARALLEL": "1", "CORRAL_KEEP_ALIVE": "-1"}
        with running_server(tmp, env) as srv, browser(tmp) as driver:
            httpx.post(srv.url + "/api/chat", json={"model": MODEL, "messages": []}, timeout=120)  # load it
            driver.get(srv.url + "/ui")
            deadline = time.monotonic() + 60
            while not driver.execute_script("return !document.querySelector('#send').disabled"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the page did not load its models")
                time.sleep(0.05)
            driver.execute_script(f"document.querySelector('#model').value = {json.dumps(MODEL)};"
                                  "document.querySelector('#model').dispatchEvent(new Event('change'))")
            time.sleep(0.5)
            for run in range(-1, args.runs):  # round -1 warms each client up and is not counted
                driver.execute_script("document.querySelector('#new-chat').click()")
                page = driver.execute_async_script(PAGE_RUN, PROMPT) / 1000
                driver.execute_script("document.querySelector('#stop').click()")
                idle(srv.url)
                cli = cli_first_output(srv.env)
                idle(srv.url)
                api = api_first_content(srv.url)
                idle(srv.url)
                if run >= 0:
                    times["page"].append(page)
                    times["cli"].append(cli)
                    times["api"].append(api)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"{date.today()}, {cpu}, {os.cpu_count()} cores, CORRAL_NUM_THREADS={args.threads}, {args.runs} runs, "
          f"prompt {PROMPT!r}")
    print("| client | median | min | max |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1000:.0f} ms | {min(values) * 1000:.0f} ms | "
              f"{max(values) * 1000:.0f} ms |")
    print("raw (s):", json.dumps({k: [round(v, 3) for v in vs] for k, vs in times.items()}))


if __name__ == "__main__":
    main()
