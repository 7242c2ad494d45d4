"""The web chat at ``/ui`` in a real headless Chromium against a real server and the bundled model.

Each step saves a screenshot under the test's temporary folder (``shots/``), to look at while changing the page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MODEL, ServerProcess, running_server

from tests.browser import browser
from tests.fault_registry import MEDIA_MODEL, FaultRegistry, serve

pytestmark = pytest.mark.e2e

KEY = "ui-test-key-4b1d"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # One slot, so /api/ps's slots_busy is the page's request and nothing else.
    with running_server(tmp_path_factory.mktemp("ui"), {"CORRAL_NUM_PARALLEL": "1"}) as server:
        yield server


class Page:
    """The page in one browser, with the few helpers the tests share."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.d = driver
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.d.save_screenshot(str(self.shots / f"{name}.png"))

    def js(self, script: str, *args: object) -> Any:
        return self.d.execute_script(script, *args)

    def find(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, selector)

    def wait(self, condition: str, timeout: float = 60, *args: object) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js("return (" + condition + ")", *args)
            if value:
                return value
            time.sleep(0.05)
        self.shot("timeout")
        raise AssertionError(f"timed out waiting for {condition}; browser log: {self.console()}")

    def console(self) -> list[str]:
        return [entry["message"] for entry in self.d.get_log("browser")]

    def errors(self) -> list[str]:
        """Console errors since the last call: a script error, a refused load, a CSP violation."""
        return [entry["message"] for entry in self.d.get_log("browser") if entry["level"] == "SEVERE"]

    def open(self, url: str) -> None:
        self.d.get(url)
        self.wait("document.readyState === 'complete'")

    def models_loaded(self) -> None:
        self.wait(f"[...document.querySelectorAll('#model option')].some(o => o.value === {json.dumps(MODEL)})"
                  " && !document.querySelector('#send').disabled")

    def pick(self, model: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find("#model")).select_by_value(model)
        self.wait("!document.querySelector('#send').disabled")

    def last_answer(self) -> tuple[str, str]:
        """(state, text) of the last assistant message: state is streaming, done, stopped or error."""
        got = self.js("const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();"
                      "return m ? [m.dataset.state, m.querySelector('.content').textContent] : ['', ''];")
        return got[0], got[1]

    def answered(self, timeout: float = 120) -> str:
        """Wait until the last answer is no longer streaming; its text."""
        self.wait("(() => { const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();"
                  " return m && m.dataset.state !== 'streaming' })()", timeout)
        state, text = self.last_answer()
        assert state == "done", (state, text, self.console())
        return text

    def settings(self, **fields: str) -> None:
        self.find("#settings-open").click()
        self.wait("document.querySelector('#settings').open")
        for field, value in fields.items():
            box = self.find("#" + field)
            box.clear()
            box.send_keys(value)
        self.find("#settings-save").click()
        self.wait("!document.querySelector('#settings').open")

    def type_and_enter(self, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        prompt = self.find("#prompt")
        prompt.send_keys(text)
        prompt.send_keys(Keys.ENTER)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with browser(tmp_path) as driver:
        yield Page(driver, tmp_path / "shots")


def busy_slots(url: str, headers: dict[str, str] | None = None) -> int:
    models = httpx.get(url + "/api/ps", headers=headers, timeout=10).json()["models"]
    return sum(m.get("slots_busy") or 0 for m in models)


def test_answer_streams_into_the_page_and_survives_a_reload(srv: ServerProcess, page: Page) -> None:
    r = httpx.get(srv.url + "/")
    assert r.text == "Ollama is running"  # the root still answers what clients probe for
    page.open(srv.url + "/ui")
    page.models_loaded()
    page.shot("01-loaded")
    page.pick(MODEL)
    assert page.find("#attach").is_displayed() is False  # the bundled model has no vision
    store_before = sorted(srv.models.rglob("*"))
    page.settings(**{"temperature": "0", "num-predict": "60"})

    # Shift+Enter adds a line, Enter sends.
    from selenium.webdriver.common.keys import Keys

    prompt = page.find("#prompt")
    prompt.send_keys("Tell me about the sea.")
    prompt.send_keys(Keys.SHIFT, Keys.ENTER)
    prompt.send_keys("Answer in three sentences.")
    assert prompt.get_attribute("value") == "Tell me about the sea.\nAnswer in three sentences."
    prompt.send_keys(Keys.ENTER)

    lengths: list[int] = []  # distinct non-empty lengths of the answer seen while it was still streaming
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state, text = page.last_answer()
        if state == "streaming" and text and (not lengths or lengths[-1] != len(text)):
            lengths.append(len(text))
            if len(lengths) == 2:
                page.shot("02-streaming")
        if state and state != "streaming":
            break
        time.sleep(0.03)
    state, answer = page.last_answer()
    page.shot("03-done")
    assert state == "done", (state, answer, page.console())
    assert len(lengths) >= 2, f"the answer was seen at only {lengths} characters before it was done"
    assert lengths == sorted(lengths) and len(answer) >= lengths[-1] > 0
    assert page.find("#send").is_displayed() and not page.find("#stop").is_displayed()
    meta = page.find("#messages .msg.assistant .meta").text
    tokens = int(meta.split(" tokens")[0])
    assert 0 < tokens <= 60  # the Max tokens setting reached the server as num_predict
    user = page.find("#messages .msg.user .content").text
    assert user == "Tell me about the sea.\nAnswer in three sentences."

    # Reload: the conversation comes back from localStorage, in the list and in the message pane.
    page.d.refresh()
    page.models_loaded()
    assert page.wait("document.querySelectorAll('#messages .msg').length") == 2
    assert page.last_answer() == ("done", answer)
    assert page.find("#messages .msg.user .content").text == user
    assert page.find("#chats li.current .chat-open").text.startswith("Tell me about the sea.")
    page.shot("04-reloaded")
    assert page.errors() == []  # no script error and nothing the Content-Security-Policy had to block
    # Nothing of the chat was written on the server: the store is as it was before the first message.
    assert sorted(srv.models.rglob("*")) == store_before

    # The second turn carries the history; a new chat starts empty and the old one stays in the list.
    page.find("#new-chat").click()
    assert page.wait("document.querySelector('#messages .empty')")
    assert page.js("return document.querySelectorAll('#chats li').length") == 1  # empty chats are not listed


def test_stop_aborts_the_request_and_frees_the_slot(srv: ServerProcess, page: Page) -> None:
    page.open(srv.url + "/ui")
    page.models_loaded()
    page.pick(MODEL)
    page.settings(**{"temperature": "0", "num-predict": "-1"})
    # Greedy, this prompt runs for well over 600 tokens with the bundled template (a counting prompt ends in 21).
    page.type_and_enter("Write a long essay about the history of Rome.")
    page.wait("(() => { const m = [...document.querySelectorAll('#messages .msg.assistant')].pop(); return m"
              " && m.dataset.state === 'streaming' && m.querySelector('.content').textContent.length > 20 })()")
    assert busy_slots(srv.url) == 1
    assert page.find("#stop").is_displayed() and not page.find("#send").is_displayed()
    page.shot("05-before-stop")
    page.find("#stop").click()
    stopped_at = time.monotonic()
    freed = None
    while time.monotonic() - stopped_at < 3:
        if busy_slots(srv.url) == 0:
            freed = time.monotonic() - stopped_at
            break
        time.sleep(0.05)
    assert freed is not None, "the slot was still busy 3 s after Stop"
    state, text = page.last_answer()
    assert state == "stopped" and text
    assert "stopped" in page.find("#messages .msg.assistant .meta").text
    assert page.find("#send").is_displayed()
    # The partial answer stays, also after a reload.
    page.d.refresh()
    page.models_loaded()
    assert page.wait("document.querySelectorAll('#messages .msg').length") == 2
    assert page.last_answer() == ("stopped", text)
    page.shot("06-stopped")


HOSTILE = "<img src=x onerror=\"window.__pwned = 1\"><script>window.__pwned = 2</script>"
STORED_ANSWER = f"""Here is the **function** you asked for, with `inline code`:

```python
def add(a, b):
    return a + b  # {HOSTILE}
```

Text with {HOSTILE} and a [bad link](javascript:window.__pwned=3) and a [good one](https://example.org/x).

- first item
- second *item*

| name | value |
|------|------:|
| one  | 1     |
"""


def test_markdown_code_blocks_and_html_in_model_output(srv: ServerProcess, page: Page) -> None:
    page.open(srv.url + "/ui")
    chat = {"id": "c1", "title": "Stored chat", "model": MODEL, "updated": 1,
            "messages": [{"role": "user", "content": "Write add() " + HOSTILE},
                         {"role": "assistant", "model": MODEL, "content": STORED_ANSWER,
                          "thinking": "The user wants a function.",
                          "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}]}
    page.js("localStorage.setItem('corral.chats', arguments[0]); localStorage.setItem('corral.current', 'c1');",
            json.dumps([chat]))
    page.d.refresh()
    page.models_loaded()
    page.wait("document.querySelector('#messages pre code')")
    page.shot("07-markdown")
    code = page.find("#messages .msg.assistant pre code")
    assert code.get_attribute("textContent") == f"def add(a, b):\n    return a + b  # {HOSTILE}"
    assert code.get_attribute("class") == "language-python"
    content = page.find("#messages .msg.assistant .content")
    # The HTML is text: no element was made of it, no handler ran, and it reads as written.
    assert page.js("return document.querySelectorAll('#messages img, #messages script').length") == 0
    assert page.js("return window.__pwned === undefined")
    assert HOSTILE in content.get_attribute("textContent")
    assert HOSTILE in page.find("#messages .msg.user .content").get_attribute("textContent")
    assert page.find("#messages .msg.assistant strong").text == "function"
    assert page.find("#messages .msg.assistant p code").text == "inline code"
    links = page.js("return [...document.querySelectorAll('#messages .content a')].map(a => a.href)")
    assert links == ["https://example.org/x"]
    assert "bad link" in content.text
    assert page.js("return document.querySelectorAll('#messages .content li').length") == 2
    assert page.find("#messages .content td.align-right").text == "1"
    # Thinking is shown collapsed; the tool call is shown by name with its arguments.
    thinking = page.find("#messages .msg.assistant details.thinking")
    assert thinking.get_attribute("open") is None
    assert page.find("#messages .thinking-text").get_attribute("textContent") == "The user wants a function."
    assert page.find("#messages .tool-name").text == "Tool call: get_weather"
    assert json.loads(page.find("#messages .tool-call code").text) == {"city": "Oslo"}
    thinking.find_element("css selector", "summary").click()
    assert thinking.get_attribute("open") is not None
    page.shot("08-thinking-open")
    assert page.errors() == []


LINK = 'target="_blank" rel="noopener noreferrer"'
MARKDOWN_CASES = [
    ("**b** and *i* and ~~s~~ and ***bi***", "<p><strong>b</strong> and <em>i</em> and <del>s</del> and "
                                            "<strong><em>bi</em></strong></p>"),
    ("snake_case_name, a * b * c, **open", "<p>snake_case_name, a * b * c, **open</p>"),
    ("a\nb\n\nc", "<p>a<br>b</p><p>c</p>"),
    ("# Title\ntext\n\n---", "<h1>Title</h1><p>text</p><hr>"),
    ("`<i>` and ``a ` b``", "<p><code>&lt;i&gt;</code> and <code>a ` b</code></p>"),
    ("<b onmouseover=x>hi</b>", "<p>&lt;b onmouseover=x&gt;hi&lt;/b&gt;</p>"),
    ("[x](javascript:alert(1)) [y](JAVASCRIPT:alert(1)) [z](java\tscript:alert(1)) [w](data:text/html,x) "
     "[v](/api/tags) <javascript:alert(1)>",
     "<p>x y z w v &lt;javascript:alert(1)&gt;</p>"),
    ("[ok](https://example.org/a?b=1) see https://example.org/c. <mailto:a@b.example>",
     f'<p><a href="https://example.org/a?b=1" {LINK}>ok</a> see <a href="https://example.org/c" {LINK}>'
     f'https://example.org/c</a>. <a href="mailto:a@b.example" {LINK}>mailto:a@b.example</a></p>'),
    ("![alt <b>](https://example.org/i.png)",
     f'<p><a href="https://example.org/i.png" {LINK} class="image-link">alt &lt;b&gt;</a></p>'),
    ("```js\nlet a = '<b>';\n```\nafter", "<pre data-lang=\"js\"><code class=\"language-js\">let a = '&lt;b&gt;';"
                                          "</code></pre><p>after</p>"),
    ("```\nstill streaming <x>", "<pre><code>still streaming &lt;x&gt;</code></pre>"),
    ("- a\n  - b\n- c *d*", "<ul><li><p>a</p><ul><li><p>b</p></li></ul></li><li><p>c <em>d</em></p></li></ul>"),
    ("3. three\n4. four", '<ol start="3"><li><p>three</p></li><li><p>four</p></li></ol>'),
    ("> quoted **bold**\n> more", "<blockquote><p>quoted <strong>bold</strong><br>more</p></blockquote>"),
    ("| a | b |\n|:--|--:|\n| `x|y` | 2 |",
     '<div class="table-wrap"><table><thead><tr><th class="align-left">a</th><th class="align-right">b</th></tr>'
     '</thead><tbody><tr><td class="align-left"><code>x|y</code></td><td class="align-right">2</td></tr></tbody>'
     "</table></div>"),
    ("    indented code\n\ntext", "<pre><code>indented code</code></pre><p>text</p>"),
    ("\\*not em\\*", "<p>*not em*</p>"),
]


def test_markdown_renderer_cases(srv: ServerProcess, page: Page) -> None:
    """The page's own renderer, run in the browser on each case: the HTML it builds, as the DOM serializes it."""
    page.open(srv.url + "/ui")
    got = page.d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('./ui/markdown.js').then((m) => done(arguments[0].map((text) => {"
        "  const box = document.createElement('div'); box.append(m.renderMarkdown(text)); return box.innerHTML;"
        "})), (e) => done(String(e)));", [text for text, _ in MARKDOWN_CASES])
    assert isinstance(got, list), got
    for (text, want), html in zip(MARKDOWN_CASES, got, strict=True):
        assert html == want, text


def test_model_details_theme_and_localhost_origin(srv: ServerProcess, page: Page) -> None:
    # Served from localhost, the page's POSTs carry Origin: http://localhost:PORT and must still be let in.
    port = srv.url.rsplit(":", 1)[1]
    page.open(f"http://localhost:{port}/ui")
    page.models_loaded()
    page.pick(MODEL)
    page.find("#details").click()
    page.wait("document.querySelector('#info .facts')")
    facts = page.find("#info .facts").text
    assert "Capabilities" in facts and "completion" in facts and "llama" in facts
    page.shot("09-details")
    page.find("#info-close").click()

    dark = "getComputedStyle(document.body).backgroundColor"
    before = page.js("return " + dark)
    page.find("#theme").click()
    after = page.js("return " + dark)
    assert before != after
    theme = page.js("return document.documentElement.dataset.theme")
    page.d.refresh()
    page.models_loaded()
    assert page.js("return document.documentElement.dataset.theme") == theme  # the choice is kept
    assert page.js("return " + dark) == after

    page.settings(**{"temperature": "0", "num-predict": "8"})
    page.type_and_enter("Say hello.")
    assert page.answered()
    page.shot("10-localhost-dark")


def test_phone_width(srv: ServerProcess, tmp_path: Path) -> None:
    with browser(tmp_path, 390, 844) as driver:
        page = Page(driver, tmp_path / "shots")
        page.open(srv.url + "/ui")
        chat = {"id": "wide", "title": "Wide", "model": MODEL, "updated": 1, "messages": [
            {"role": "user", "content": "A long line please"},
            {"role": "assistant", "model": MODEL,
             "content": "A word: " + "x" * 300 + "\n\n```\n" + "y = 1; " * 80 + "\n```\n\n| a | b |\n|---|---|\n| "
                        + "wide cell " * 30 + " | 2 |"}]}
        page.js("localStorage.setItem('corral.chats', arguments[0]); localStorage.setItem('corral.current', 'wide');",
                json.dumps([chat]))
        page.d.refresh()
        page.models_loaded()
        assert page.js("return window.innerWidth") == 390
        overflow = ("return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth,"
                    " document.querySelector('#messages').scrollWidth) - window.innerWidth")
        assert page.js(overflow) <= 0
        for selector in ("#prompt", "#send", "#model"):
            box = page.js("const r = document.querySelector(arguments[0]).getBoundingClientRect();"
                          "return [r.left, r.right, r.top, r.bottom, r.width]", selector)
            assert page.find(selector).is_displayed(), selector
            assert box[0] >= 0 and box[1] <= 390 and box[2] >= 0 and box[3] <= 844 and box[4] > 30, (selector, box)
        assert not page.find("#sidebar").is_displayed() or page.js(
            "return document.querySelector('#sidebar').getBoundingClientRect().right") <= 0
        page.shot("11-phone")
        page.find("#menu").click()
        page.wait("document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
        page.shot("12-phone-drawer")
        page.find("#chats li .chat-open").click()  # opening a conversation closes the drawer
        page.wait("document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
        page.settings(**{"temperature": "0", "num-predict": "12"})
        page.find("#prompt").send_keys("Hi!")
        page.find("#send").click()
        assert page.answered()
        assert page.js("return document.querySelectorAll('#messages .msg').length") == 4
        assert page.js(overflow) <= 0
        page.shot("13-phone-answer")
        assert page.errors() == []


def test_api_key_is_asked_once(tmp_path: Path, page: Page) -> None:
    with running_server(tmp_path / "locked", {"CORRAL_API_KEY": KEY, "CORRAL_NUM_PARALLEL": "1"}) as locked:
        # The page itself loads without the key; the API does not.
        for path in ("/ui", "/ui/app.js", "/ui/style.css"):
            assert httpx.get(locked.url + path).status_code == 200, path
        assert httpx.get(locked.url + "/api/tags").status_code == 401
        assert httpx.post(locked.url + "/api/chat", json={"model": MODEL}).status_code == 401
        assert httpx.post(locked.url + "/ui", json={}).status_code == 401  # only GET and HEAD are open

        page.open(locked.url + "/ui")
        page.wait("document.querySelector('#key').open")
        page.shot("14-key-asked")
        page.find("#api-key").send_keys("wrong-key")
        page.find("#key-save").click()
        page.wait("document.querySelector('#key').open && "
                  "document.querySelector('#key-message').textContent.includes('refused')")
        page.shot("15-key-refused")
        page.find("#api-key").send_keys(KEY)
        page.find("#key-save").click()
        page.models_loaded()
        assert not page.js("return document.querySelector('#key').open")
        page.pick(MODEL)
        page.settings(**{"temperature": "0", "num-predict": "8"})
        page.type_and_enter("Hello!")
        assert page.answered()
        page.shot("16-key-works")
        # A reload does not ask again: the key is kept in the browser.
        page.d.refresh()
        page.models_loaded()
        assert not page.js("return document.querySelector('#key').open")
        assert busy_slots(locked.url, {"Authorization": f"Bearer {KEY}"}) == 0


def test_pull_shows_progress(srv: ServerProcess, page: Page) -> None:
    with serve() as registry:
        registry.add_model("library/tiny", "latest", [(MEDIA_MODEL, b"\0" * 1_200_000)])
        registry.faults.chunk_delay = 0.02  # ~0.8 MB/s: long enough to see the bar move
        _pull(srv, page, registry)


def _pull(srv: ServerProcess, page: Page, registry: FaultRegistry) -> None:
    name = f"{registry.host}/library/tiny:latest"
    page.open(srv.url + "/ui")
    page.models_loaded()
    page.find("#pull-open").click()
    page.find("#pull-name").send_keys(name)
    page.find("#pull-insecure").click()
    page.find("#pull-start").click()
    seen = page.wait("(() => { const p = document.querySelector('#pull-progress');"
                     " return p.hasAttribute('value') && p.value > 0 && p.value < p.max && [p.value, p.max] })()", 60)
    assert seen[1] == 1_200_000
    assert "%" in page.find("#pull-status").text
    page.shot("17-pull-progress")
    page.wait("document.querySelector('#pull-status').textContent.startsWith('Pulled')", 60)
    page.shot("18-pull-done")
    assert page.wait(f"[...document.querySelectorAll('#model option')].some(o => o.value === {json.dumps(name)})")
    with httpx.Client(base_url=srv.url) as http:
        assert http.request("DELETE", "/api/delete", json={"model": name}).status_code == 200


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def vision_model(srv: ServerProcess, name: str, tmp: Path) -> None:
    """The bundled model plus the tests' projector (tests/vision_fixture.py): a vision model the engine really runs."""
    from conftest import SMOL_FILE, bundled_file

    from tests.vision_fixture import write_projector

    data = write_projector(tmp / "mmproj.gguf", bundled_file(*SMOL_FILE)).read_bytes()
    projector = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=srv.url, timeout=120) as http:
        assert http.post(f"/api/blobs/{projector}", content=data).status_code == 201
        manifest = http.post("/api/show", json={"model": MODEL}).json()
        weights = next(layer["digest"] for layer in json.loads(
            (srv.models / "manifests/registry.ollama.ai/library/smollm2/135m").read_text())["layers"]
            if layer["mediaType"] == MEDIA_MODEL)
        r = http.post("/api/create", json={"model": name, "stream": False,
                                           "files": {"model.gguf": weights, "mmproj.gguf": projector}})
        assert r.status_code == 200, r.text
        assert "vision" in http.post("/api/show", json={"model": name}).json()["capabilities"], manifest


def test_images_are_attached_only_for_vision_models(srv: ServerProcess, tmp_path: Path) -> None:
    vision_model(srv, "smolvis:latest", tmp_path)
    image = tmp_path / "red.png"
    image.write_bytes(png(8, 6, (220, 30, 30)))
    with browser(tmp_path, performance_log=True) as driver:
        page = Page(driver, tmp_path / "shots")
        page.open(srv.url + "/ui")
        page.models_loaded()
        page.pick(MODEL)
        assert not page.find("#attach").is_displayed()
        page.pick("smolvis:latest")
        page.wait("!document.querySelector('#attach').hidden")
        page.settings(**{"temperature": "0", "num-predict": "8"})
        page.find("#file").send_keys(str(image))
        page.wait("document.querySelectorAll('#attachments img').length === 1")
        page.shot("19-image-attached")
        page.type_and_enter("What colour is this?")
        assert page.answered()
        shown = page.find("#messages .msg.user .msg-images img")
        assert page.js("return arguments[0].naturalWidth", shown) == 8  # decoded from the stored base64
        assert page.js("return document.querySelectorAll('#attachments img').length") == 0
        page.shot("20-image-sent")
        # The request the browser sent carried the file, base64-encoded, in the user message's images.
        bodies = [json.loads(e["params"]["request"]["postData"]) for e in performance_events(driver)
                  if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["url"].endswith(
                      "/api/chat") and e["params"]["request"].get("postData")]
        assert bodies and bodies[-1]["model"] == "smolvis:latest"
        assert bodies[-1]["messages"][-1]["images"] == [base64.b64encode(image.read_bytes()).decode()]
        # Switching back to a model without vision hides the button and drops pending attachments.
        page.find("#file").send_keys(str(image))
        page.wait("document.querySelectorAll('#attachments img').length === 1")
        page.pick(MODEL)
        page.wait("document.querySelector('#attach').hidden && document.querySelector('#attachments').hidden")
    with httpx.Client(base_url=srv.url) as http:
        assert http.request("DELETE", "/api/delete", json={"model": "smolvis:latest"}).status_code == 200


def test_think_toggle_for_thinking_models(srv: ServerProcess, tmp_path: Path) -> None:
    # A template that renders .Thinking makes a model "thinking"-capable (Ollama's rule).
    template = ("{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ if .Thinking }}{{ .Thinking }}{{ end }}"
                "{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n")
    with httpx.Client(base_url=srv.url, timeout=120) as http:
        r = http.post("/api/create", json={"model": "smolthink", "from": MODEL, "template": template,
                                           "stream": False})
        assert r.status_code == 200, r.text
        assert "thinking" in http.post("/api/show", json={"model": "smolthink"}).json()["capabilities"]
    with browser(tmp_path, performance_log=True) as driver:
        page = Page(driver, tmp_path / "shots")
        page.open(srv.url + "/ui")
        page.models_loaded()
        page.pick(MODEL)
        assert not page.find("#think").is_displayed()
        page.pick("smolthink:latest")
        page.wait("!document.querySelector('#think-row').hidden")
        page.find("#think").click()
        page.settings(**{"temperature": "0", "num-predict": "8"})
        page.type_and_enter("Hi")
        assert page.answered()
        bodies = [json.loads(e["params"]["request"]["postData"]) for e in performance_events(driver)
                  if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["url"].endswith(
                      "/api/chat") and e["params"]["request"].get("postData")]
        assert bodies[-1]["think"] is True
        page.d.refresh()
        page.models_loaded()
        assert page.js("return document.querySelector('#think').checked")  # the choice is kept
    with httpx.Client(base_url=srv.url) as http:
        assert http.request("DELETE", "/api/delete", json={"model": "smolthink:latest"}).status_code == 200


def performance_events(driver: Any) -> list[dict[str, Any]]:
    return [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
