"""Images without a server: the checks every family's images go through, and where request building puts them."""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from corral.errors import RequestError
from corral.inference import images, launch, memory, options, prompting
from corral.inference.request import InferenceRequest
from corral.inference.runner.process import server_flags
from corral.inference.runner.spec import LaunchSpec
from corral.store.gguf_info import read_gguf_info
from corral.templates.gotemplate import parse
from tests.conftest import SMOL_FILE, bundled_file
from tests.vision_fixture import IMAGE_TOKENS, png_bytes, write_projector

RED = png_bytes(4, 3, (255, 0, 0))
BLUE = png_bytes(5, 5, (0, 0, 255))
B64_RED = base64.b64encode(RED).decode()
B64_BLUE = base64.b64encode(BLUE).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jpeg(width: int, height: int) -> bytes:
    """A JPEG's headers up to its frame header (an APP0 segment first): enough for the size, not for decoding."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\0\0\0;"


def bmp(width: int, height: int) -> bytes:
    return b"BM" + b"\0" * 12 + struct.pack("<Iii", 40, width, height) + b"\0" * 30


# -- checks ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "kind", "size"), [
    (RED, "png", (4, 3)), (jpeg(640, 480), "jpeg", (640, 480)), (gif(7, 9), "gif", (7, 9)),
    (bmp(12, -8), "bmp", (12, 8)),
])
def test_formats_the_engine_decodes_pass_with_their_size(data: bytes, kind: str, size: tuple[int, int]) -> None:
    info = images.check(b64(data), "image 1")
    assert (info.kind, (info.width, info.height), info.size) == (kind, size, len(data))


def test_base64_with_line_breaks_passes_as_gos_decoder_allows() -> None:
    wrapped = "\r\n".join(B64_RED[i:i + 76] for i in range(0, len(B64_RED), 76)) + "\n"
    assert images.check(wrapped, "image 1").kind == "png"
    assert images.clean(wrapped) == B64_RED


@pytest.mark.parametrize(("data", "message"), [
    ("not base64!", "invalid image (image 2): not valid base64"),
    ("aGVsbG8", "invalid image (image 2): not valid base64"),  # unpadded
    ("data:image/png;base64," + B64_RED,
     "invalid image (image 2): not valid base64 (send the base64 data without a data: URL prefix)"),
    ("", "invalid image (image 2): empty"),
    (b64(b"hello, world"), "invalid image (image 2): not an image (supported: PNG, JPEG, GIF or BMP)"),
    (b64(b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20),
     "invalid image (image 2): WebP is not supported by the engine; send PNG, JPEG, GIF or BMP"),
    (b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 30), "invalid image (image 2): a broken PNG header"),
    (b64(b"\xff\xd8\xff\xda\0\x02"), "invalid image (image 2): a broken JPEG header"),
    (b64(png_bytes(0, 0, (0, 0, 0))), "invalid image (image 2): a broken PNG header"),
    (b64(gif(20000, 2)),
     "invalid image (image 2): 20000x2 pixels is larger than the limit (16384 a side, 32 megapixels)"),
    (b64(jpeg(8000, 8000)),
     "invalid image (image 2): 8000x8000 pixels is larger than the limit (16384 a side, 32 megapixels)"),
])
def test_bad_images_are_refused_naming_the_image_and_the_problem(data: str, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        images.check(data, "image 2")
    assert str(caught.value) == message
    assert caught.value.status == 400


def test_an_image_over_the_byte_limit_is_refused_before_and_after_decoding() -> None:
    for extra in (1, 100):  # one byte over is seen after decoding; far over, from the text's length alone
        big = RED + b"\0" * (images.MAX_IMAGE_BYTES - len(RED) + extra)
        with pytest.raises(RequestError, match=r"^invalid image \(image 1\): larger than the 20 MB limit$"):
            images.check(b64(big), "image 1")
    # Line breaks make the text longer than the limit's base64, but the decoded size is what counts.
    exact = RED + b"\0" * (images.MAX_IMAGE_BYTES - len(RED))
    text = b64(exact)
    assert images.check("\n".join(text[i:i + 76] for i in range(0, len(text), 76)), "image 1").size == len(exact)


def _model(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = {"display_name": "vis:latest", "projectors": [Path("/p")], "projector_info": None,
                            "messages": [], "system": "", "template": None, "params": {},
                            "capabilities": lambda: ["completion", "vision"]}
    base.update(fields)
    return SimpleNamespace(**base)


def test_check_request_labels_each_image_by_message() -> None:
    req = InferenceRequest(model=_model(), messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "a", "images": [B64_RED]},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c", "images": [B64_BLUE, "bad"]},
    ])
    with pytest.raises(RequestError, match=r"^invalid image \(message 3, image 2\): not valid base64$"):
        images.check_request(req)
    good = InferenceRequest(model=_model(), prompt="x", images=[B64_RED, B64_BLUE])  # type: ignore[arg-type]
    assert images.check_request(good) == 2


def test_a_model_without_a_projector_refuses_images_with_a_reason() -> None:
    req = InferenceRequest(model=_model(projectors=[]), prompt="x", images=[B64_RED])  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="has no vision projector"):
        images.check_request(req)


# -- placement ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "count", "pieces"), [
    ("describe", 1, [0, "describe"]),
    ("describe", 2, [0, 1, "describe"]),
    ("a [img] b", 1, ["a ", 0, " b"]),
    ("a [img] b [img]", 2, ["a ", 0, " b ", 1]),
    ("a [img] b", 2, [1, "a ", 0, " b"]),  # one placeholder: the second image goes in front, as in Ollama
    ("", 1, [0]),
])
def test_split_content_follows_ollamas_rule(content: str, count: int, pieces: list[Any]) -> None:
    assert images.split_content(content, count) == pieces


def test_content_parts_carry_data_urls_in_place() -> None:
    parts = images.content_parts("compare [img] with [img]", [B64_RED, b64(jpeg(2, 2))])
    assert parts == [
        {"type": "text", "text": "compare "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64_RED}},
        {"type": "text", "text": " with "},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + b64(jpeg(2, 2))}},
    ]


def test_placement_swaps_its_tags_for_the_engines_marker_in_order() -> None:
    place = images.Placement()
    first, second = place.tag(B64_RED), place.tag(B64_BLUE)
    text = f"<s>{second} then {first} and [img-0] typed by a user"
    prompt, plain = place.engine_prompt(text, "<M>")
    assert prompt == {"prompt_string": "<s><M> then <M> and [img-0] typed by a user",
                      "multimodal_data": [B64_BLUE, B64_RED]}
    assert plain == "<s> then  and [img-0] typed by a user"
    assert place.engine_prompt("no tags", "<M>") == ("no tags", "no tags")
    assert images.Placement().nonce != place.nonce


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One projector for the bundled model, shared by this module's tests (writing one takes seconds)."""
    return write_projector(tmp_path_factory.mktemp("projector") / "sha256-abc", bundled_file(*SMOL_FILE))


def test_tokens_per_image_reads_fixed_size_projectors(projector: Path) -> None:
    path = projector
    info = read_gguf_info(path)
    assert images.tokens_per_image(info) == IMAGE_TOKENS == 16
    assert images.tokens_per_image(None) == images.OLLAMA_IMAGE_TOKENS
    graph = memory.projector_bytes(info, path.stat().st_size)
    assert graph == path.stat().st_size + 4 * (32 * 32 * 3 + 16 * 64 + 16 * 16 * 4)


# -- request building ---------------------------------------------------------------------------------------------

CHATML = parse("{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}\n{{ end }}<|assistant|>")


class FakeEngine:
    """The runner client's calls request building makes: /props, tokenize, detokenize, apply-template."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def get(self, path: str) -> Any:
        self.calls.append(path)
        return {"media_marker": "<__media_xyz__>"}

    async def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return list(range(len(text.split())))

    async def detokenize(self, tokens: list[int]) -> str:
        return "OLD "

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        self.calls.append(path)
        marker = "<__media_xyz__>"
        text = "".join(p["text"] if p["type"] == "text" else marker for m in body["messages"]
                       for p in (m["content"] if isinstance(m["content"], list) else [{"type": "text",
                                                                                        "text": m["content"]}]))
        return {"prompt": text}


def build(req: InferenceRequest, num_ctx: int = 4096, engine: FakeEngine | None = None) -> prompting.EngineCall:
    settings = prompting.settle(req, options.merge({}, {}), num_ctx)
    return asyncio.run(prompting.build(engine or FakeEngine(), req, settings, num_ctx))  # type: ignore[arg-type]


def test_rendered_chat_puts_markers_where_the_template_puts_each_messages_images() -> None:
    model = _model(go_template=lambda: CHATML)
    req = InferenceRequest(model=model, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "first", "images": [B64_RED]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "a [img] b", "images": ["\n".join([B64_BLUE[:40], B64_BLUE[40:]])]},
    ])
    call = build(req)
    assert call.endpoint == prompting.COMPLETION
    assert call.body["prompt"] == {
        "prompt_string": "<|user|><__media_xyz__>first\n<|assistant|>red\n<|user|>a <__media_xyz__> b\n<|assistant|>",
        "multimodal_data": [B64_RED, B64_BLUE],  # line breaks gone
    }
    assert call.prompt == "<|user|>first\n<|assistant|>red\n<|user|>a  b\n<|assistant|>"


def test_text_only_requests_send_a_plain_prompt_and_never_ask_for_the_marker() -> None:
    engine = FakeEngine()
    call = build(InferenceRequest(model=_model(go_template=lambda: CHATML),  # type: ignore[arg-type]
                                  messages=[{"role": "user", "content": "hi"}]), engine=engine)
    assert call.body["prompt"] == "<|user|>hi\n<|assistant|>" and engine.calls == []


def test_generate_places_images_before_the_prompt_in_each_mode() -> None:
    model = _model(go_template=lambda: CHATML)
    call = build(InferenceRequest(model=model, prompt="what?", images=[B64_RED]))  # type: ignore[arg-type]
    assert call.body["prompt"]["prompt_string"] == "<|user|><__media_xyz__>what?\n<|assistant|>"
    raw = build(InferenceRequest(model=model, prompt="A [img] B", images=[B64_RED, B64_BLUE],  # type: ignore[arg-type]
                                 raw=True))
    assert raw.body["prompt"] == {"prompt_string": "<__media_xyz__>A <__media_xyz__> B",
                                  "multimodal_data": [B64_BLUE, B64_RED]}
    override = build(InferenceRequest(model=model, prompt="p", images=[B64_RED],  # type: ignore[arg-type]
                                      template="[{{ range .Messages }}{{ .Content }}{{ end }}]"))
    assert override.body["prompt"]["prompt_string"] == "[<__media_xyz__>p]"
    fim = _model(go_template=lambda: parse("<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}<MID>"))
    infill = build(InferenceRequest(model=fim, prompt="def f(", suffix="):", images=[B64_RED]))  # type: ignore[arg-type]
    assert infill.body["prompt"]["prompt_string"] == "<PRE><__media_xyz__>def f(<SUF>):<MID>"


def test_history_fitting_counts_images_and_drops_them_with_their_message() -> None:
    model = _model(go_template=lambda: CHATML)  # no projector metadata: 768 tokens an image, as Ollama assumes
    req = InferenceRequest(model=model, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "old", "images": [B64_RED]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "new", "images": [B64_BLUE]},
    ])
    call = build(req, num_ctx=1000)  # the oldest message goes, and its image with it
    assert call.body["prompt"] == {"prompt_string": "<|assistant|>ok\n<|user|><__media_xyz__>new\n<|assistant|>",
                                   "multimodal_data": [B64_BLUE]}
    assert build(req, num_ctx=2000).body["prompt"]["multimodal_data"] == [B64_RED, B64_BLUE]


def test_native_chat_sends_content_parts() -> None:
    model = _model(go_template=lambda: None, info=SimpleNamespace(chat_template="{{ messages }}"))
    req = InferenceRequest(model=model, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "what is this?", "images": [B64_RED]}])
    call = build(req)
    assert call.endpoint == prompting.CHAT
    assert call.body["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64_RED}},
        {"type": "text", "text": "what is this?"}]}]


def test_a_forced_call_on_the_native_path_sends_the_images_of_the_engines_own_prompt() -> None:
    model = _model(go_template=lambda: None, info=SimpleNamespace(chat_template="{{ messages }}"))
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    req = InferenceRequest(model=model, tools=[tool], tool_choice="required", messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "one", "images": [B64_RED]},
        {"role": "user", "content": "two", "images": [B64_BLUE]}])
    call = build(req)
    assert call.endpoint == prompting.COMPLETION
    assert call.body["prompt"] == {"prompt_string": "<__media_xyz__>one<__media_xyz__>two",
                                   "multimodal_data": [B64_RED, B64_BLUE]}
    assert call.prompt == "onetwo"


def test_bad_images_fail_while_settling_before_any_runner_is_leased() -> None:
    req = InferenceRequest(model=_model(go_template=lambda: CHATML), prompt="x",  # type: ignore[arg-type]
                           images=[b64(b"GIF89a")])
    with pytest.raises(RequestError, match=r"invalid image \(image 1\): a broken GIF header"):
        prompting.settle(req, {}, 2048)


# -- launch ---------------------------------------------------------------------------------------------------------


def test_the_projector_is_part_of_the_launch_and_its_size(projector: Path) -> None:
    from corral.store.model import Model
    from corral.store.names import parse_name

    smol = bundled_file(*SMOL_FILE)
    record = SimpleNamespace(manifest=SimpleNamespace(size=0))
    plain = Model(name=parse_name("smol"), record=record, model_path=smol, model_digest="sha256:1")  # type: ignore[arg-type]
    vision = Model(name=parse_name("vis"), record=record, model_path=smol, model_digest="sha256:1",  # type: ignore[arg-type]
                   projectors=[projector])
    a, b = launch.plan(plain, {"num_ctx": 2048}), launch.plan(vision, {"num_ctx": 2048})
    assert a.spec.projector is None and b.spec.projector == str(projector)
    assert a.key != b.key  # a vision runner is not shared with the text-only model on the same weights
    assert b.size - a.size == memory.projector_bytes(vision.projector_info, projector.stat().st_size)
    assert launch.plan(vision, {"num_ctx": 2048}, for_embedding=True).spec.projector is None


def test_server_flags_load_the_projector() -> None:
    spec = LaunchSpec(model="/m.gguf", num_ctx=2048, parallel=1, projector="/p.gguf")
    args = server_flags(spec, "llama-server", "/run/engine.sock")
    assert args[args.index("--mmproj") + 1] == "/p.gguf" and "--no-mmproj-offload" not in args
    spec.num_gpu = 0
    assert "--no-mmproj-offload" in server_flags(spec, "llama-server", "/run/engine.sock")


def test_wheel_params_load_the_projector() -> None:
    from corral.inference.runner.wheel import build_params

    spec = {**LaunchSpec(model="/m.gguf", num_ctx=2048, parallel=1, projector="/p.gguf").to_json(), "num_gpu": 0}
    params = build_params(spec)
    assert params.mmproj.path == "/p.gguf" and params.mmproj_use_gpu is False
    assert build_params({**spec, "projector": None}).mmproj.path == ""
