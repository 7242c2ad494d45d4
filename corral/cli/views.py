"""Text for ``list``, ``ps`` and ``show``: API responses in, the exact lines Ollama prints out.

Kept apart from the commands so each layout can be checked against Ollama's without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from corral.cli.format import display_width, go_g, human_bytes, human_time, parse_time, render_table
from corral.humanize import human_number


def list_table(models: Sequence[Mapping[str, Any]], prefix: str | None = None, now: datetime | None = None) -> str:
    """``ollama list``: NAME, ID (12 hex of the manifest digest), SIZE, MODIFIED; the prefix filter ignores case."""
    rows = []
    for m in models:
        name = str(m.get("name") or m.get("model") or "")
        if prefix and not name.lower().startswith(prefix.lower()):
            continue
        size = "-" if m.get("remote_host") else human_bytes(int(m.get("size") or 0))
        modified = human_time(parse_time(m.get("modified_at")), "Never", now)
        rows.append([name, str(m.get("digest") or "")[:12], size, modified])
    return render_table(rows, ["NAME", "ID", "SIZE", "MODIFIED"])


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model lives: ``100% CPU``, ``100% GPU``, ``48%/52% CPU/GPU`` or ``Unknown``."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = int((size - size_vram) / size * 100 + 0.5)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires_at: str | None, now: datetime | None = None) -> str:
    """When a loaded model unloads: ``4 minutes from now``, ``Forever``, ``Stopping...`` once past, ``Never``."""
    when = parse_time(expires_at)
    if when is None:
        return "Never"
    now = now or datetime.now(UTC)
    if now > when:
        return "Stopping..."
    return human_time(when, "Never", now)


def ps_table(models: Sequence[Mapping[str, Any]], prefix: str | None = None, now: datetime | None = None) -> str:
    """``ollama ps``: NAME, ID, SIZE, PROCESSOR, CONTEXT, UNTIL."""
    rows = []
    for m in models:
        if prefix and not str(m.get("model") or m.get("name") or "").startswith(prefix):
            continue
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        rows.append([
            str(m.get("name") or m.get("model") or ""),
            str(m.get("digest") or "")[:12],
            human_bytes(size),
            processor(size, vram),
            str(int(m.get("context_length") or 0)),
            until(m.get("expires_at"), now),
        ])
    return render_table(rows, ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"])


def go_value(value: Any) -> str:
    """Go's ``%v`` for a decoded JSON value."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_g(float(value))
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def metadata_value(value: Any) -> str:
    """A model_info value as ``show --verbose`` prints it; long arrays are cut to about ten columns."""
    if isinstance(value, bool | str | int | float):
        return go_value(value)
    if isinstance(value, list):
        shown, width = 0, 1
        for i, item in enumerate(value):
            w = display_width(go_value(item)) + (2 if i > 0 else 0)
            if width + w > 10 and i > 0:
                break
            width += w
            shown += 1
        if shown < len(value):
            return go_value(value[:shown])[:-1] + f" ...+{len(value) - shown} more]"
        return go_value(value)
    if value is None:
        return "<nil>"
    return "map[string]interface {}" if isinstance(value, dict) else type(value).__name__


def _plain_number(value: Any) -> str | None:
    """``strconv.FormatFloat(f, 'f', -1, 64)``: no exponent, no trailing ``.0``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return format(number, "f").rstrip("0").rstrip(".") if "e" in repr(number) else repr(number)


def _head(text: str, n: int) -> list[list[str]]:
    rows: list[list[str]] = []
    count = 0
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        count += 1
        if count <= n:
            rows.append(["", stripped])
    if count > n:
        rows.append(["", "..."])
    return rows


def _section(title: str, rows: list[list[str]]) -> str:
    width = 100 if title in ("Template", "System", "License") else 30
    return f"  {title}\n" + render_table(rows, max_width=width) + "\n"


def show_info(resp: Mapping[str, Any], verbose: bool = False) -> str:
    """``ollama show MODEL``: the Model, Capabilities, Projector, Parameters, (Metadata, Tensors), System and
    License sections."""
    details: Mapping[str, Any] = resp.get("details") or {}
    model_info = resp.get("model_info")
    out: list[str] = []

    rows: list[list[str]] = []
    if resp.get("remote_host"):
        rows.append(["", "Remote model", str(resp.get("remote_model") or "")])
        rows.append(["", "Remote URL", str(resp["remote_host"])])
    if isinstance(model_info, Mapping):
        arch = model_info.get("general.architecture")
        arch = arch if isinstance(arch, str) else ""
        if arch:
            rows.append(["", "architecture", arch])
        params = str(details.get("parameter_size") or "")
        count = model_info.get("general.parameter_count")
        if not params and isinstance(count, int | float) and not isinstance(count, bool):
            params = human_number(int(count))
        if params:
            rows.append(["", "parameters", params])
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            text = _plain_number(model_info.get(f"{arch}.{key}"))
            if text is not None:
                rows.append(["", label, text])
    else:
        rows.append(["", "architecture", str(details.get("family") or "")])
        rows.append(["", "parameters", str(details.get("parameter_size") or "")])
    rows.append(["", "quantization", str(details.get("quantization_level") or "")])
    if resp.get("requires"):
        rows.append(["", "requires", str(resp["requires"])])
    out.append(_section("Model", rows))

    capabilities = resp.get("capabilities") or []
    if capabilities:
        out.append(_section("Capabilities", [["", str(c)] for c in capabilities]))

    projector = resp.get("projector_info")
    if isinstance(projector, Mapping) and projector:
        rows = []
        arch = projector.get("general.architecture")
        arch = arch if isinstance(arch, str) else ""
        if arch:
            rows.append(["", "architecture", arch])
        count = projector.get("general.parameter_count")
        if isinstance(count, int | float) and not isinstance(count, bool):
            rows.append(["", "parameters", human_number(int(count))])
        for suffix, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
            for modality in ("vision", "audio"):
                text = _plain_number(projector.get(f"{arch}.{modality}.{suffix}"))
                if text is not None:
                    rows.append(["", label, text])
                    break
        out.append(_section("Projector", rows))

    parameters = str(resp.get("parameters") or "")
    if parameters:
        out.append(_section("Parameters", [["", *line.split()] for line in parameters.split("\n") if line]))

    if verbose and isinstance(model_info, Mapping):
        out.append(_section("Metadata", [["", k, metadata_value(model_info[k])] for k in sorted(model_info)]))
    tensors = resp.get("tensors") or []
    if verbose and tensors:
        rows = []
        for t in tensors:
            shape = "[" + " ".join(str(d) for d in (t.get("shape") or [])) + "]"
            rows.append(["", str(t.get("name") or ""), str(t.get("type") or ""), shape])
        out.append(_section("Tensors", rows))

    if resp.get("system"):
        out.append(_section("System", _head(str(resp["system"]), 2)))
    if resp.get("license"):
        out.append(_section("License", _head(str(resp["license"]), 2)))
    return "".join(out)
