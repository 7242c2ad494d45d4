"""``corral ui``: the address of the server's web chat, and opening it in the user's browser."""

from __future__ import annotations

import os
import sys
import webbrowser

from corral.config import HostPort


def page_url(host: HostPort) -> str:
    """The page's URL as a browser on this machine reaches it: a server bound to all interfaces is on loopback."""
    name = host.host
    if name in ("0.0.0.0", ""):
        name = "127.0.0.1"
    elif name == "::":
        name = "::1"
    return f"{HostPort(host.scheme, name, host.port).url}/ui"


def open_in_browser(url: str) -> bool:
    """Open ``url`` in the default browser; False where there is none to open (then the caller prints the URL).

    On Linux without a display, Python's ``webbrowser`` would fall back to a text-mode browser in this terminal;
    there the URL is printed instead, unless ``BROWSER`` names a browser explicitly.
    """
    graphical = sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or
                                                             os.environ.get("WAYLAND_DISPLAY"))
    if not graphical and not os.environ.get("BROWSER"):
        return False
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
