"""Vision end to end: the bundled SmolLM2 plus the tests' projector (``tests/vision_fixture.py``), through every API
family, on the rendered path (a Go TEMPLATE) and the native one (the GGUF's Jinja template).

The projector's weights are random, so what the model says about an image means nothing; what the tests check is
that the image reached the engine where it belongs: the prompt grows by exactly the projector's image tokens, the same
image gives the same greedy answer in every family, different images (or the same images in another order) give
different ones, and a history with an image is served from the prefix cache.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from corral.store import manifest as mf
from corral.store.names import parse_name
from corral.store.store import Store
from tests.conftest import MODEL, SMOL_FILE, ServerProcess, bundled_file, derive, running_server
from tests.fault_registry import serve
from tests.vision_fixture import IMAGE_TOKENS, png_bytes, write_projector

pytestmark = pytest.mark.e2e

QUESTION = "Describe the image."
GREEDY = {"temperature": 0, "num_predict": 8}
RED = base64.b64encode(png_bytes(32, 32, (255, 0, 0))).decode()
BLUE = base64.b64encode(png_bytes(32, 32, (0, 0, 255))).decode()
CHECKER = base64.b64encode(png_bytes(64, 64, lambda x, y: (255,) * 3 if (x // 8 + y // 8) % 2 else (0,) * 3)).decode()


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_projector(tmp_path_factory.mktemp("vision") / "mmproj.gguf", bundled_file(*SMOL_FILE)).read_bytes()


@pytest.fixture(scope="module")
def rendered(server: ServerProcess, projector: bytes) -> str:
    """SmolLM2's own layers (TEMPLATE, SYSTEM, params) plus the projector: the rendered path."""
    derive(server, "vis-rendered", add={mf.MEDIA_PROJECTOR: projector})
    return "vis-rendered"


@pytest.fixture(scope="module")
def native(server: ServerProcess, projector: bytes) -> str:
    """No TEMPLATE layer: the engine applies the GGUF's Jinja template to content parts."""
    derive(server, "vis-native", drop=(mf.MEDIA_TEMPLATE, mf.MEDIA_SYSTEM), add={mf.MEDIA_PROJECTOR: projector})
    return "vis-native"


@pytest.fixture(scope="module", params=["rendered", "native"])
def model(request: pytest.FixtureRequest, rendered: str, native: str) -> str:
    return rendered if request.param == "rendered" else native


def chat(server: ServerProcess, model: str, images: list[str], content: str = QUESTION, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": content}
    if images:
        message["images"] = images
    body = {"model": model, "stream": False, "options": GREEDY, "messages": [message], **extra}
    r = httpx.post(server.url + "/api/chat", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def data_url(image: str) -> str:
    return "data:image/png;base64," + image


# -- the image reaches the model ----------------------------------------------------------------------------------


def test_an_image_adds_exactly_the_projectors_tokens(server: ServerProcess, rendered: str) -> None:
    # keep_alive 0: each request gets a fresh runner, so no prefix cache hides part of the prompt.
    text = chat(server, rendered, [], keep_alive=0)
    image = chat(server, rendered, [RED], keep_alive=0)
    assert image["prompt_eval_count"] == text["prompt_eval_count"] + IMAGE_TOKENS


def test_every_family_sends_the_image(server: ServerProcess, model: str) -> None:
    """Greedy answers: the same image gives the same answer in every family, another image another answer."""
    red, blue = (chat(server, model, [i])["message"]["content"] for i in (RED, BLUE))
    assert red != blue
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", timeout=300)
    claude = anthropic.Anthropic(base_url=server.url, api_key="x", timeout=300)
    for image, expected in ((RED, red), (BLUE, blue)):
        answer = oai.chat.completions.create(model=model, temperature=0, max_tokens=8, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": QUESTION}]}])
        assert answer.choices[0].message.content == expected, "openai chat"
        response = oai.responses.create(model=model, temperature=0, max_output_tokens=8, input=[
            {"role": "user", "content": [{"type": "input_image", "image_url": data_url(image), "detail": "auto"},
                                         {"type": "input_text", "text": QUESTION}]}])
        assert response.output_text == expected, "openai responses"
        message = claude.messages.create(model=model, max_tokens=8, extra_body={"temperature": 0}, messages=[
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
                {"type": "text", "text": QUESTION}]}])
        assert message.content[0].text == expected, "anthropic messages"  # type: ignore[union-attr]
    if model == "vis-rendered":  # generate renders the same chat as a one-message /api/chat
        client = ollama.Client(host=server.url, timeout=300)
        assert client.generate(model=model, prompt=QUESTION, images=[RED], options=GREEDY).response == red
        assert client.chat(model=model, options=GREEDY, messages=[
            {"role": "user", "content": QUESTION, "images": [BLUE]}]).message.content == blue


def test_several_images_and_their_order(server: ServerProcess, model: str) -> None:
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", timeout=300)

    def ask(*images: str) -> tuple[str, int]:
        r = oai.responses.create(model=model, temperature=0, max_output_tokens=8, input=[
            {"role": "user", "content": [*({"type": "input_image", "image_url": data_url(i), "detail": "auto"}
                                           for i in images), {"type": "input_text", "text": QUESTION}]}])
        assert r.usage is not None
        return r.output_text, r.usage.input_tokens  # every prompt token, evaluated or cached

    def answer(*images: str) -> tuple[str, list[float]]:
        """The greedy answer and its tokens' log-probabilities: with random-weight images eight greedy tokens may
        well agree when the images swap (on the native build they do), the probabilities only if the order is lost."""
        r = httpx.post(server.url + "/api/chat", timeout=300, json={
            "model": model, "stream": False, "options": GREEDY, "logprobs": True,
            "messages": [{"role": "user", "content": QUESTION, "images": list(images)}]}).json()
        return r["message"]["content"], [e["logprob"] for e in r["logprobs"]]

    _, base = ask()
    _, with_one = ask(RED)
    _, with_two = ask(RED, CHECKER)
    assert (with_one, with_two) == (base + IMAGE_TOKENS, base + 2 * IMAGE_TOKENS)
    one, ab, ba = answer(RED), answer(RED, CHECKER), answer(CHECKER, RED)
    assert answer(RED, CHECKER) == ab  # deterministic, so a difference below is the order's
    assert ab != ba and ab != one


def test_an_image_in_the_history_is_served_from_the_prefix_cache(server: ServerProcess, model: str) -> None:
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", timeout=300)
    turn = [{"role": "user", "content": [{"type": "input_image", "image_url": data_url(CHECKER), "detail": "auto"},
                                         {"type": "input_text", "text": "What is this?"}]}]
    first = oai.responses.create(model=model, temperature=0, max_output_tokens=8, input=turn)  # type: ignore[arg-type]
    second = oai.responses.create(model=model, temperature=0, max_output_tokens=8, input=[  # type: ignore[arg-type]
        *turn, {"role": "assistant", "content": first.output_text}, {"role": "user", "content": "And its colours?"}])
    assert first.usage is not None and second.usage is not None
    # The whole first prompt, image included, is a prefix of the second one and comes from the cache (a miss at the
    # image would leave only the text before it cached).
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
    assert second.usage.input_tokens > first.usage.input_tokens


def test_a_saved_prompt_with_an_image_is_restored_after_a_reload(tmp_path: Path, projector: bytes) -> None:
    """KV persistence keeps the image: a 256+ token prompt saved at unload is restored by the next runner."""
    with running_server(tmp_path) as srv:
        derive(srv, "vis", add={mf.MEDIA_PROJECTOR: projector})
        body = {"model": "vis", "stream": False, "options": GREEDY, "keep_alive": 0, "messages": [
            {"role": "system", "content": "You are a careful assistant. " * 60},
            {"role": "user", "content": QUESTION, "images": [RED]}]}
        with srv.client() as http:
            first, second = (http.post("/api/chat", json=body).json() for _ in range(2))
        assert first["prompt_eval_count"] > 256 + IMAGE_TOKENS
        # The count is the whole prompt (as Ollama reports it); all but the last token or two came from the disk.
        assert second["prompt_eval_count"] == first["prompt_eval_count"]
        assert second["prompt_eval_count"] - second["prompt_eval_cached_count"] <= 2
        assert second["message"] == first["message"]
        assert "restored KV cache of 1 slot(s)" in srv.log_text()


# -- bad images ---------------------------------------------------------------------------------------------------

NOT_AN_IMAGE = base64.b64encode(b"just some text, not a picture").decode()
WEBP = base64.b64encode(b"RIFF\x24\0\0\0WEBPVP8 \x18\0\0\0" + b"\0" * 24).decode()
HUGE = base64.b64encode(png_bytes(1, 1, (0, 0, 0))[:16] + (20000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0").decode()
TOO_BIG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * (20 * 1024 * 1024)).decode()

BAD = [
    ("invalid base64", "iVBOR!!!", "not valid base64"),
    ("not an image", NOT_AN_IMAGE, "not an image (supported: PNG, JPEG, GIF or BMP)"),
    ("webp", WEBP, "WebP is not supported by the engine"),
    ("too many pixels", HUGE, "20000x20000 pixels is larger than the limit (16384 a side, 32 megapixels)"),
    ("too many bytes", TOO_BIG, "larger than the 20 MB limit"),
]


def _family_requests(model: str, image: str) -> dict[str, tuple[str, dict[str, Any]]]:
    url = "data:image/png;base64," + image
    return {
        "generate": ("/api/generate", {"model": model, "prompt": "x", "images": [image], "stream": False}),
        "chat": ("/api/chat", {"model": model, "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [image]}]}),
        "openai": ("/v1/chat/completions", {"model": model, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}),
        "responses": ("/v1/responses", {"model": model, "input": [
            {"role": "user", "content": [{"type": "input_image", "image_url": url}]}]}),
        "anthropic": ("/v1/messages", {"model": model, "max_tokens": 4, "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                     "data": image}}]}]}),
    }


def _error(r: httpx.Response) -> str:
    body = r.json()
    error = body.get("error")
    return str(error.get("message") if isinstance(error, dict) else error)


@pytest.mark.parametrize(("case", "image", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_images_are_a_400_naming_the_problem_in_every_family(server: ServerProcess, rendered: str, case: str,
                                                                 image: str, message: str) -> None:
    with server.client() as http:
        for family, (path, body) in _family_requests(rendered, image).items():
            r = http.post(path, json=body)
            assert r.status_code == 400, (family, r.text[:300])
            error = _error(r)
            if family in ("openai", "responses", "anthropic") and case == "invalid base64":
                assert "invalid" in error and ("base64" in error or "image input" in error), (family, error)
                continue
            assert "invalid image" in error and message in error, (family, error)
            assert len(error) < 300  # the message names the problem; it never echoes the image back


def test_an_image_the_engine_cannot_decode_is_a_400(server: ServerProcess, rendered: str) -> None:
    # A real PNG header on garbage pixels passes the header checks; the engine's decoder refuses it.
    broken = base64.b64encode(png_bytes(8, 8, (1, 2, 3))[:33] + b"IDAT-not-zlib" * 4).decode()
    with server.client() as http:
        r = http.post("/api/chat", json={"model": rendered, "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [broken]}]})
    assert (r.status_code, _error(r)) == (400, "invalid image: the engine could not decode it (a damaged or truncated "
                                                "file, or a format variant its decoder lacks)")
    assert chat(server, rendered, [RED])["done"]  # the runner is fine afterwards


def test_images_for_a_model_without_a_projector(server: ServerProcess) -> None:
    with server.client() as http:
        r = http.post("/api/chat", json={"model": MODEL, "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [RED]}]})
        assert (r.status_code, _error(r)) == (400, f'"{MODEL}" does not support images')
        # A model that claims vision (its config says so, as a GGUF with the vision tower inside would) but has no
        # projector layer cannot take images either: the engine has nothing to encode them with.
        store = Store(server.models)
        record = store.read_manifest(store.resolve(MODEL))
        config = json.loads(store.blob_path(record.manifest.config.digest).read_bytes())
        config["capabilities"] = ["completion", "vision"]
        digest, size = store.write_bytes(json.dumps(config).encode())
        store.write_manifest(parse_name("vis-claims"), mf.Manifest(
            config=mf.Layer(mediaType=record.manifest.config.media_type, digest=digest, size=size),
            layers=record.manifest.layers))
        r = http.post("/api/generate", json={"model": "vis-claims", "prompt": "x", "images": [RED], "stream": False})
        assert r.status_code == 400 and "has no vision projector" in _error(r)


def test_openai_remote_image_urls_are_refused(server: ServerProcess, rendered: str) -> None:
    with server.client() as http:
        r = http.post("/v1/chat/completions", json={"model": rendered, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}]}]})
    assert r.status_code == 400 and "image URLs are not currently supported" in _error(r)


def _files(root: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def test_nothing_of_a_bad_image_is_kept(tmp_path: Path, projector: bytes) -> None:
    marker = base64.b64encode(b"corral-bad-image-marker " * 8).decode()
    with running_server(tmp_path) as srv:
        derive(srv, "vis", add={mf.MEDIA_PROJECTOR: projector})
        before = _files(srv.models) | _files(srv.home)
        with srv.client() as http:
            for image in (marker, "!!" + marker, NOT_AN_IMAGE):
                for path, body in _family_requests("vis", image).values():
                    assert http.post(path, json=body).status_code == 400
        assert _files(srv.models) | _files(srv.home) == before
        assert marker[:40] not in srv.log_text()


# -- show and pull ------------------------------------------------------------------------------------------------


def test_show_reports_the_projector(server: ServerProcess, rendered: str) -> None:
    with server.client() as http:
        shown = http.post("/api/show", json={"model": rendered}).json()
        info = shown["projector_info"]
        assert info["general.architecture"] == "clip" and info["general.name"] == "corral-test-projector"
        assert info["clip.vision.projection_dim"] == 576 and info["clip.vision.embedding_length"] == 64
        assert info["general.parameter_count"] > 0
        assert info["clip.vision.image_mean"] == [0.5, 0.5, 0.5]
        assert "vision" in shown["capabilities"]
        assert "projector_info" not in http.post("/api/show", json={"model": MODEL}).json()


def test_hugging_face_pull_takes_the_repositorys_projector(tmp_path: Path, projector: bytes) -> None:
    """Hugging Face serves a vision repository's manifest with its mmproj file as a projector layer."""
    smol = bundled_file(*SMOL_FILE).read_bytes()
    with serve() as registry:
        registry.add_model("corral-test/SmolVLM-GGUF", "Q4_1", [
            (mf.MEDIA_MODEL, smol), (mf.MEDIA_PROJECTOR, projector),
            (mf.MEDIA_PARAMS, b'{"stop":["<|im_end|>"]}')])
        with running_server(tmp_path, {"CORRAL_REGISTRY_MIRRORS": f"hf.co={registry.url}"}) as srv, \
                srv.client() as http:
            r = http.post("/api/pull", json={"model": "hf.co/corral-test/SmolVLM-GGUF:Q4_1", "stream": False})
            assert r.status_code == 200 and r.json() == {"status": "success"}, r.text
            name = "hf.co/corral-test/SmolVLM-GGUF:Q4_1"
            shown = http.post("/api/show", json={"model": name}).json()
            assert "vision" in shown["capabilities"] and shown["projector_info"]["general.architecture"] == "clip"
            counts = []
            for images in ([], [RED]):  # keep_alive 0: a fresh runner each, nothing cached
                r = http.post("/api/chat", json={"model": name, "stream": False, "options": GREEDY, "keep_alive": 0,
                                                 "messages": [{"role": "user", "content": QUESTION, "images": images}]})
                assert r.status_code == 200, r.text
                counts.append(r.json()["prompt_eval_count"])
            assert counts[1] == counts[0] + IMAGE_TOKENS
