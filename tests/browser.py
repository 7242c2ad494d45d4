"""A real headless Chromium for the web chat's tests, driven by Selenium through Debian's ``chromedriver``.

Nothing may reach the network: Selenium is given the driver's path (so its manager, which would download a driver
and send usage statistics, never runs) and told not to report (``SE_AVOID_STATS``), and Chromium starts with its
background services off and a fresh profile in the test's folder. The browser and the driver are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path("/usr/bin/chromedriver")
BROWSERS = (Path("/usr/lib/chromium/chromium"), Path("/usr/bin/chromium"))
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def chromium() -> Path:
    binary = next((b for b in BROWSERS if b.exists()), None)
    if binary is None or not DRIVER.exists():
        pytest.fail("chromium and chromium-driver are not installed: apt-get install -y chromium chromium-driver "
                    "(.ci/run installs them)", pytrace=False)
    return binary


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


@contextlib.contextmanager
def browser(tmp: Path, width: int = 1200, height: int = 800, *, performance_log: bool = False) -> Iterator[Any]:
    """A Chrome WebDriver session; on exit the session ends and the driver and every browser process are killed by
    PID if they outlived it. ``performance_log`` records DevTools network events (request bodies included)."""
    os.environ["SE_AVOID_STATS"] = "true"
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium())
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp / f"chromium-profile-{time.monotonic_ns()}"
    profile.mkdir(parents=True)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    logs = {"browser": "ALL", **({"performance": "ALL"} if performance_log else {})}
    options.set_capability("goog:loggingPrefs", logs)
    service = Service(executable_path=str(DRIVER), log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver_pid = service.process.pid
    if width < 500:  # below Chromium's smallest window: emulate the phone's viewport instead
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    pids = [driver_pid, *descendants(driver_pid)]
    try:
        yield driver
    finally:
        pids += [p for p in descendants(driver_pid) if p not in pids]
        with contextlib.suppress(Exception):
            driver.quit()
        with contextlib.suppress(Exception):
            service.stop()
        deadline = time.monotonic() + 5
        for pid in reversed(pids):
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
