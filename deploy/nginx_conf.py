"""Render deploy/nginx.conf for replicas other than compose's corral-1..3, e.g. several ``corral serve`` on one host.

    python deploy/nginx_conf.py --replica 127.0.0.1:11435 --replica 127.0.0.1:11436 --listen 11434 > nginx.conf

The shipped deploy/nginx.conf stays the single source: this only swaps its upstream servers, listen address, njs
directory and log path (and, with ``--prefix``, adds the pid file and temporary paths an unprivileged nginx needs).
Each swap must match exactly once, so an edit of nginx.conf that this would render wrongly fails loudly instead.
The tests and deploy/bench_affinity.py run nginx on what this renders.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf"
JS_FILE = "corral_affinity.js"

_SERVER_RE = re.compile(r"^(?P<indent>[ \t]*)server corral-\d+:11434(?P<params>[^;\n]*);[ \t]*\n", re.MULTILINE)
_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class TemplateError(ValueError):
    """nginx.conf no longer has a line this renderer replaces."""


def _swap(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise TemplateError(f"nginx.conf should contain {old!r} exactly once")
    return text.replace(old, new)


def render(replicas: list[str], *, listen: str = "11434", js_dir: Path = HERE, access_log: str | None = None,
           prefix: Path | None = None, affinity: bool = True, js_module: str | None = None,
           user: str | None = None, template: str | None = None) -> str:
    """nginx.conf with ``replicas`` (``host:port``) as the upstream servers.

    ``affinity=False`` leaves out the consistent hash (plain round-robin), for measuring what affinity buys.
    ``prefix`` is a directory for the pid file, error log and temporary files, so nginx runs as any user; ``user``
    names the workers' user when the master runs as root (else nginx picks ``nobody``, who may not reach ``prefix``)."""
    if not replicas:
        raise ValueError("at least one replica is needed")
    text = TEMPLATE.read_text() if template is None else template
    servers = list(_SERVER_RE.finditer(text))
    if not servers:
        raise TemplateError("nginx.conf has no 'server corral-N:11434 ...;' lines in its upstream block")
    first = servers[0]
    lines = "".join(f"{first['indent']}server {r}{first['params']};\n" for r in replicas)
    text = text[:first.start()] + lines + _SERVER_RE.sub("", text[first.start():])
    text = _swap(text, "listen 11434;", f"listen {listen};")
    text = _swap(text, "js_path /etc/nginx/njs/;", f"js_path {js_dir}/;")
    if access_log is not None:
        text = _swap(text, "access_log /var/log/nginx/access.log corral;", f"access_log {access_log} corral;")
    if js_module is not None:
        text = _swap(text, "load_module /usr/lib/nginx/modules/ngx_http_js_module.so;", f"load_module {js_module};")
    if not affinity:
        text = _swap(text, "hash $corral_affinity consistent;", "# round-robin: no hash")
    if user is not None:
        text = f"user {user};\n" + text
    if prefix is not None:
        text = f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n" + text
        temps = "".join(f"    {name}_temp_path {prefix}/{name}_temp;\n" for name in _TEMP_DIRS)
        text = _swap(text, "http {\n", "http {\n" + temps)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica", action="append", required=True, help="host:port of a replica (repeat)")
    parser.add_argument("--listen", default="11434", help="nginx's listen address (default 11434)")
    parser.add_argument("--js-dir", type=Path, default=Path("/etc/nginx/njs"),
                        help=f"directory holding {JS_FILE} (default /etc/nginx/njs)")
    parser.add_argument("--round-robin", action="store_true", help="no conversation affinity")
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.replica, listen=args.listen, js_dir=args.js_dir, affinity=not args.round_robin))


if __name__ == "__main__":
    main()
