"""Prometheus metrics: ``GET /metrics`` on a real server with ``CORRAL_METRICS=1``, parsed by prometheus_client's own
text parser; a 404 when metrics are off (the default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from corral import metrics
from tests.conftest import MODEL, ServerProcess, running_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(srv: ServerProcess) -> Samples:
    r = httpx.get(srv.url + "/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("metrics"), {"CORRAL_METRICS": "1"}) as srv:
        yield srv


@pytest.mark.e2e
def test_counters_move_with_requests(metrics_server: ServerProcess) -> None:
    before = scrape(metrics_server)
    assert value(before, "corral_loaded_models") == 0
    assert value(before, "corral_queue_depth") == 0
    with metrics_server.client() as c:
        gen = c.post("/api/generate", json={"model": MODEL, "prompt": "Say hi", "stream": False,
                                           "options": {"num_predict": 8, "temperature": 0}}).json()
        missing = c.post("/api/generate", json={"model": "no-such-model", "prompt": "x"})
        assert missing.status_code == 404
        chat = c.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4, "stream": True,
                                                    "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200
        assert c.get("/no/such/path").status_code == 404
    after = scrape(metrics_server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("corral_requests_total", family="native", route="/api/generate", status="200") == 1
    assert delta("corral_requests_total", family="native", route="/api/generate", status="404") == 1
    assert delta("corral_requests_total", family="openai", route="/v1/chat/completions", status="200") == 1
    assert delta("corral_requests_total", family="other", route="unmatched", status="404") == 1

    # Tokens by model (the stream's tokens come on top of generate's; exact counts are the next test's).
    assert delta("corral_generated_tokens_total", model=MODEL) >= gen["eval_count"] > 0
    assert delta("corral_prompt_tokens_total", model=MODEL) >= gen["prompt_eval_count"] > 0
    assert 1 <= delta("corral_time_to_first_token_seconds_count", model=MODEL) <= 2  # one per answer with output
    assert delta("corral_request_duration_seconds_count", family="native", route="/api/generate") == 2

    # Histogram buckets are cumulative and end at the count.
    labels = {"family": "openai", "route": "/v1/chat/completions"}
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in after.items()
                      if k[0] == "corral_request_duration_seconds_bucket"
                      and {n: x for n, x in k[1] if n != "le"} == labels), key=lambda b: b[0])
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == float("inf")
    assert counts[-1] == value(after, "corral_request_duration_seconds_count", **labels)
    assert value(after, "corral_request_duration_seconds_sum", **labels) > 0

    assert value(after, "corral_loaded_models") == 1
    assert value(after, "corral_queue_depth") == 0
    assert any(k[0] == "corral_build_info" for k in after)


@pytest.mark.e2e
def test_exact_token_counts_for_one_generation(metrics_server: ServerProcess) -> None:
    before = scrape(metrics_server)
    with metrics_server.client() as c:
        gen = c.post("/api/generate", json={"model": MODEL, "prompt": "Count: 1, 2, 3,", "raw": True,
                                           "stream": False, "options": {"num_predict": 5, "temperature": 0}}).json()
    after = scrape(metrics_server)
    generated = value(after, "corral_generated_tokens_total", model=MODEL) - value(
        before, "corral_generated_tokens_total", model=MODEL)
    prompt = value(after, "corral_prompt_tokens_total", model=MODEL) - value(
        before, "corral_prompt_tokens_total", model=MODEL)
    assert generated == gen["eval_count"]
    assert prompt == gen.get("prompt_eval_count", 0)


def test_metrics_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.http.app import create_app

    for name in ("CORRAL_METRICS", "OLLAMA_METRICS"):
        monkeypatch.delenv(name, raising=False)
    try:
        client = TestClient(create_app(tmp_path / "models"), base_url="http://127.0.0.1")
        r = client.get("/metrics")
        assert r.status_code == 404
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    finally:
        metrics.configure(False)


def test_exposition_escapes_label_values() -> None:
    registry = metrics.Registry()
    registry.generated_tokens.inc(('we"ird\\name\nx',), 3)
    registry.ttft.observe(("m",), 0.3)
    families = {f.name: f for f in text_string_to_metric_families(registry.exposition())}
    sample = families["corral_generated_tokens"].samples[0]
    assert sample.labels == {"model": 'we"ird\\name\nx'} and sample.value == 3
    ttft = {s.labels.get("le"): s.value for s in families["corral_time_to_first_token_seconds"].samples
            if s.name.endswith("_bucket")}
    assert ttft["0.25"] == 0 and ttft["0.5"] == 1 and ttft["+Inf"] == 1


def test_series_names_types_and_buckets() -> None:
    """The exposition's families, kinds and bucket bounds, as the README lists them; no ``*_created`` series."""
    registry = metrics.Registry()
    registry.requests.inc(("native", "/api/tags", "200"))
    registry.latency.observe(("native", "/api/tags"), 0.02)
    registry.ttft.observe(("m",), 0.2)
    for counter in (registry.prompt_tokens, registry.cached_tokens, registry.generated_tokens):
        counter.inc(("m",), 1)
    families = list(text_string_to_metric_families(registry.exposition()))
    assert [(f.name, f.type) for f in families] == [
        ("corral_requests", "counter"), ("corral_request_duration_seconds", "histogram"),
        ("corral_time_to_first_token_seconds", "histogram"), ("corral_prompt_tokens", "counter"),
        ("corral_prompt_cached_tokens", "counter"), ("corral_generated_tokens", "counter"),
        ("corral_loaded_models", "gauge"), ("corral_queue_depth", "gauge"), ("corral_build_info", "gauge")]
    names = {s.name for f in families for s in f.samples}
    assert not any(n.endswith("_created") for n in names)
    assert {"corral_requests_total", "corral_request_duration_seconds_bucket", "corral_request_duration_seconds_sum",
            "corral_request_duration_seconds_count", "corral_generated_tokens_total"} <= names
    by_name = {f.name: f for f in families}
    for family, labels, bounds in (("corral_request_duration_seconds", {"family", "route", "le"},
                                    metrics.LATENCY_BUCKETS),
                                   ("corral_time_to_first_token_seconds", {"model", "le"}, metrics.TTFT_BUCKETS)):
        buckets = [s for s in by_name[family].samples if s.name.endswith("_bucket")]
        assert all(set(s.labels) == labels for s in buckets)
        assert [float(s.labels["le"]) for s in buckets] == [*bounds, float("inf")]
    assert set(by_name["corral_requests"].samples[0].labels) == {"family", "route", "status"}


def test_registries_are_separate_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Registry has a prometheus_client registry of its own (never the library's global one), and a metric
    keeps at most MAX_SERIES label sets: model names come from clients."""
    import prometheus_client

    a, b = metrics.Registry(), metrics.Registry()
    a.generated_tokens.inc(("m",), 5)
    # The global registry's own collectors (process CPU, memory, gc) change between two reads; none is Corral's.
    assert "corral_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert 'model="m"' in a.exposition() and 'model="m"' not in b.exposition()
    monkeypatch.setattr(metrics, "MAX_SERIES", 3)
    for i in range(5):
        b.generated_tokens.inc((f"model-{i}",), 1)
        b.ttft.observe((f"model-{i}",), 0.1)
    samples = [s for f in text_string_to_metric_families(b.exposition()) for s in f.samples]
    assert {s.labels["model"] for s in samples if s.name == "corral_generated_tokens_total"} == {
        "model-0", "model-1", "model-2"}
    assert len([s for s in samples if s.name == "corral_time_to_first_token_seconds_count"]) == 3
    b.generated_tokens.inc(("model-1",), 1)  # an existing series still counts
    assert 'corral_generated_tokens_total{model="model-1"} 2.0' in b.exposition()
