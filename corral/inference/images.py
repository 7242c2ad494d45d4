"""Images for vision models: checked on the way in, placed in the prompt, handed to the engine.

Every API family turns its image inputs into base64 strings on native messages (``images``) or on a generate
request; this module is the one place that judges them and the one place that knows how the engine takes them.

- **Checks** (:func:`check_request`, before any runner is leased): each image must be base64 (line breaks allowed,
  as Go's decoder allows them), of a format the engine decodes (PNG, JPEG, GIF, BMP: its ``stb_image``), at most
  :data:`MAX_IMAGE_BYTES` decoded, at most :data:`MAX_SIDE` pixels a side and :data:`MAX_PIXELS` in all. A failure
  is a 400 naming the image and the problem. Images are never written anywhere and never logged; a rejected one is
  dropped with the request.
- **Placement** on the rendered path (a Go ``TEMPLATE``): Ollama's ``chatPrompt`` rule puts an image's tag where the
  message's content has a literal ``[img]``, else before the content. Corral renders with a tag of its own per image
  (``[img-<nonce>-<n>]``, random per request, so no user text can forge one), then replaces each tag found in the
  rendered text, in order, by the engine's media marker and lists the image's bytes in that same order
  (:class:`Placement`): the engine's ``/completion`` takes ``{"prompt_string": ..., "multimodal_data": [...]}``.
- **Placement** on the native path (the GGUF's Jinja template via ``/v1/chat/completions``): the same rule makes a
  message's content a list of OpenAI parts, text and ``image_url`` data URLs in order (:func:`content_parts`).

The engine's marker is random per engine process (llama-server's ``get_media_marker``); Corral reads it from
``/props`` once per runner (:func:`media_marker`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import RequestError

if TYPE_CHECKING:
    from corral.store.gguf_info import GGUFInfo

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # decoded bytes per image
MAX_SIDE = 16384  # pixels, width or height
MAX_PIXELS = 32 * 1024 * 1024  # width x height (about 100 MiB as the engine's decoded RGB)
DEFAULT_MARKER = "<__media__>"  # mtmd's default, for an engine whose /props does not name its marker
OLLAMA_IMAGE_TOKENS = 768  # what Ollama assumes an image costs when it fits a history into num_ctx

FORMATS = ("PNG", "JPEG", "GIF", "BMP")
MIME = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "bmp": "image/bmp"}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    kind: str  # "png", "jpeg", "gif" or "bmp"
    width: int
    height: int
    size: int  # decoded bytes

    @property
    def mime(self) -> str:
        return MIME[self.kind]


# -- checks -------------------------------------------------------------------------------------------------------


def sniff(data: bytes) -> str | None:
    """The image format from the first bytes; "webp" is recognised only to be refused by name."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def dimensions(kind: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, or None when the header is broken."""
    try:
        if kind == "png":
            if data[12:16] != b"IHDR":
                return None
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if kind == "gif":
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if kind == "bmp":
            header = struct.unpack("<I", data[14:18])[0]
            if header == 12:  # BITMAPCOREHEADER
                w, h = struct.unpack("<HH", data[18:22])
                return int(w), int(h)
            w, h = struct.unpack("<ii", data[18:26])
            return abs(int(w)), abs(int(h))  # a negative height means rows top-down
        if kind == "jpeg":
            return _jpeg_dimensions(data)
    except struct.error:
        return None
    return None


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first start-of-frame, which holds the frame's size."""
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if length < 2:
            return None
        if marker in _SOF:
            if pos + 9 > end:
                return None
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            return int(w), int(h)
        pos += 2 + length
    return None


def decode_base64(data: str) -> bytes | None:
    """Strict base64 (standard alphabet, padded), ignoring the line breaks Go's decoder ignores; None if invalid."""
    if "\n" in data or "\r" in data:
        data = data.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def check(data: str, label: str) -> ImageInfo:
    """Judge one base64 image; raises RequestError("invalid image (<label>): <why>")."""
    if not isinstance(data, str):
        raise RequestError(f"invalid image ({label}): not a base64 string")
    # Refuse an oversized image before decoding it: its base64 text alone says how large it is.
    if len(data) - data.count("\n") - data.count("\r") > (MAX_IMAGE_BYTES + 2) // 3 * 4:
        raise RequestError(f"invalid image ({label}): larger than the {MAX_IMAGE_BYTES >> 20} MB limit")
    raw = decode_base64(data)
    if raw is None:
        hint = " (send the base64 data without a data: URL prefix)" if data.startswith("data:") else ""
        raise RequestError(f"invalid image ({label}): not valid base64{hint}")
    size = len(raw)
    if size > MAX_IMAGE_BYTES:
        raise RequestError(f"invalid image ({label}): larger than the {MAX_IMAGE_BYTES >> 20} MB limit")
    if size == 0:
        raise RequestError(f"invalid image ({label}): empty")
    kind = sniff(raw)
    if kind == "webp":
        raise RequestError(f"invalid image ({label}): WebP is not supported by the engine; send "
                           f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    if kind is None:
        raise RequestError(f"invalid image ({label}): not an image (supported: {', '.join(FORMATS[:-1])} or "
                           f"{FORMATS[-1]})")
    size_px = dimensions(kind, raw)
    del raw
    if size_px is None or 0 in size_px:
        raise RequestError(f"invalid image ({label}): a broken {kind.upper()} header")
    w, h = size_px
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise RequestError(f"invalid image ({label}): {w}x{h} pixels is larger than the limit ({MAX_SIDE} a "
                           f"side, {MAX_PIXELS // (1 << 20)} megapixels)")
    return ImageInfo(kind=kind, width=w, height=h, size=size)


def request_images(req: Any) -> Iterable[tuple[str, str]]:
    """Every image of an InferenceRequest with its label: ``image N`` for generate, ``message M, image N`` for
    chat (1-based, as people count)."""
    for i, image in enumerate(req.images or ()):
        yield image, f"image {i + 1}"
    for m, message in enumerate(req.messages or ()):
        for i, image in enumerate(message.get("images") or ()):
            yield image, f"message {m + 1}, image {i + 1}"


def check_request(req: Any) -> int:
    """Check every image of a request before anything is loaded; returns how many there are."""
    count = 0
    for image, label in request_images(req):
        check(image, label)
        count += 1
    if count and not req.model.projectors:
        raise RequestError(f'"{req.model.display_name}" has no vision projector: images need a model created with '
                           "its projector (a FROM line for the mmproj GGUF); a GGUF with the vision tower inside "
                           "is not supported")
    return count


def clean(data: str) -> str:
    """Base64 as the engine's decoder takes it (no line breaks); the data was checked before."""
    if "\n" in data or "\r" in data:
        return data.replace("\r", "").replace("\n", "")
    return data


# -- placement --------------------------------------------------------------------------------------------------


class Placement:
    """Tags for a rendered prompt's images, and the engine prompt made of the rendered text.

    ``tag`` is handed to the renderer, which calls it once per image it places (the same image may be rendered into
    several candidate prompts while the history is fitted): each call registers the image under a fresh number.
    """

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(6)
        self._images: list[str] = []
        self._pattern = re.compile(r"\[img-" + self.nonce + r"-(\d+)\]")

    def tag(self, image: Any) -> str:
        self._images.append(image if isinstance(image, str) else base64.b64encode(bytes(image)).decode("ascii"))
        return f"[img-{self.nonce}-{len(self._images) - 1}]"

    def count(self, text: str) -> int:
        """How many image tags ``text`` holds."""
        return len(self._pattern.findall(text))

    def strip(self, text: str) -> str:
        """The text without its image tags (what tokenizing and the legacy ``context`` see)."""
        return self._pattern.sub("", text)

    def engine_prompt(self, text: str, marker: str) -> tuple[dict[str, Any] | str, str]:
        """The ``/completion`` prompt for rendered ``text`` (an object with the images when it has any), and the
        text without its tags."""
        images: list[str] = []

        def swap(match: re.Match[str]) -> str:
            images.append(clean(self._images[int(match.group(1))]))
            return marker

        prompt = self._pattern.sub(swap, text)
        if not images:
            return text, text
        return {"prompt_string": prompt, "multimodal_data": images}, self.strip(text)


def split_content(content: str, count: int) -> list[str | int]:
    """Ollama's placement rule as a sequence of text pieces and image indexes: image i takes the place of the next
    literal ``[img]`` in the content; the images without one go before the content, in order."""
    pieces: list[str | int] = []
    rest = content
    prefix: list[str | int] = []
    for i in range(count):
        at = rest.find("[img]")
        if at < 0:
            prefix.append(i)
            continue
        if at:
            pieces.append(rest[:at])
        pieces.append(i)
        rest = rest[at + len("[img]"):]
    if rest:
        pieces.append(rest)
    return [*prefix, *pieces]


def content_parts(content: str, images: Sequence[Any]) -> list[dict[str, Any]]:
    """A native message's content and images as OpenAI content parts, for the engine's Jinja template."""
    parts: list[dict[str, Any]] = []
    for piece in split_content(content, len(images)):
        if isinstance(piece, str):
            parts.append({"type": "text", "text": piece})
            continue
        image = images[piece]
        data = clean(image) if isinstance(image, str) else base64.b64encode(bytes(image)).decode("ascii")
        kind = sniff(base64.b64decode(data[:64])) or "png"
        parts.append({"type": "image_url", "image_url": {"url": f"data:{MIME.get(kind, 'image/png')};base64,{data}"}})
    return parts


# -- the engine ---------------------------------------------------------------------------------------------------

_markers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


async def media_marker(client: Any) -> str:
    """The engine's media marker, asked of its ``/props`` once per runner client."""
    marker = _markers.get(client)
    if marker is None:
        props = await client.get("/props")
        found = props.get("media_marker") if isinstance(props, dict) else None
        marker = found if isinstance(found, str) and found else DEFAULT_MARKER
        _markers[client] = marker
    return marker


def engine_message(message: str) -> str:
    """The engine's 400 in words a client can act on: an image that passed the header checks but does not decode."""
    if "Failed to load image" in message:
        return ("invalid image: the engine could not decode it (a damaged or truncated file, or a format variant its "
                "decoder lacks)")
    return message


def tokens_per_image(projector: GGUFInfo | None) -> int:
    """About how many prompt tokens one image takes, for fitting a history into ``num_ctx``: exact for fixed-size
    encoders (LLaVA's MLP projectors: one token per patch), Ollama's 768 otherwise."""
    if projector is None:
        return OLLAMA_IMAGE_TOKENS
    kind = projector.get("clip.projector_type") or projector.get("clip.vision.projector_type")
    size = projector.get("clip.vision.image_size")
    patch = projector.get("clip.vision.patch_size")
    fixed = kind in ("mlp", "mlp_norm") and not projector.get("clip.vision.image_grid_pinpoints")
    if fixed and isinstance(size, int) and isinstance(patch, int) and 0 < patch <= size:
        return (size // patch) ** 2
    return OLLAMA_IMAGE_TOKENS
