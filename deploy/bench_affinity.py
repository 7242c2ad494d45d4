"""What conversation affinity buys: the second turn's time to first token, three replicas behind nginx, with the
shipped configuration (consistent hash of the conversation's start) and with plain round-robin.

    python deploy/bench_affinity.py [--conversations 8] [--threads 2] [--system-tokens 1500]

Each conversation has its own long system prompt (a document of ~1,500 tokens), so only the replica that evaluated
turn 1 holds its prefix in the engine's cache. Turn 2 repeats turn 1's messages plus a short question: on that
replica the engine evaluates only the new tokens; on another one it evaluates the whole prompt again. Conversations
run one after another (one replica busy at a time), and the median of turn 2's TTFT is reported per mode, with the
prompt tokens the engine evaluated. Needs nginx with its njs module and the dev setup (it uses tests/replicas.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.replicas import cluster, nginx  # noqa: E402 - after the path set-up above

MODEL = "smollm2:135m"
WORDS = ["river", "stone", "market", "ledger", "harvest", "lantern", "copper", "weaver", "orchard", "signal",
         "harbor", "meadow", "timber", "cellar", "compass", "granite", "saddle", "furnace", "parcel", "thimble",
         "quarry", "beacon", "mortar", "spindle"]


def document(seed: int, words: int) -> str:
    rng = random.Random(seed)
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + ".")
    return " ".join(sentences)


def turn(client: httpx.Client, messages: list[dict[str, str]], num_predict: int) -> dict[str, Any]:
    """One streamed chat turn: time to the first content, the reply, and the engine's prompt counts."""
    started = time.perf_counter()
    ttft = None
    reply = ""
    final: dict[str, Any] = {}
    body = {"model": MODEL, "messages": messages, "stream": True,
            "options": {"num_predict": num_predict, "temperature": 0}}
    with client.stream("POST", "/api/chat", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"turn failed: {response.status_code} {response.text} (replica "
                               f"{response.headers.get('x-corral-replica', '?')})")
        replica = response.headers.get("x-corral-replica", "?")
        for line in response.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            content = chunk.get("message", {}).get("content", "")
            if content and ttft is None:
                ttft = time.perf_counter() - started
            reply += content
            if chunk.get("done"):
                final = chunk
    return {"ttft": ttft if ttft is not None else time.perf_counter() - started, "reply": reply,
            "replica": replica, "prompt_eval_count": final.get("prompt_eval_count"),
            "prompt_eval_ms": (final.get("prompt_eval_duration") or 0) / 1e6}


def run_mode(url: str, conversations: int, system_words: int, offset: int) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for i in range(conversations):
            system = f"Conversation {offset + i}. Answer questions about this document.\n" + document(
                offset + i, system_words)
            messages = [{"role": "system", "content": system}, {"role": "user", "content": "What is it about?"}]
            first = turn(client, messages, 16)
            messages += [{"role": "assistant", "content": first["reply"]},
                         {"role": "user", "content": "Name one word it uses."}]
            second = turn(client, messages, 8)
            rows.append({"turn1": first, "turn2": second, "same_replica": first["replica"] == second["replica"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="engine threads per replica")
    parser.add_argument("--system-words", type=int, default=1150, help="words of each system prompt (~1.3 tokens each)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-affinity-") as tmp:
        root = Path(tmp)
        with cluster(root, 3, {"CORRAL_NUM_THREADS": str(args.threads), "CORRAL_KV_CACHE_MAX": "0"}) as group:
            for replica in group.replicas.values():  # load the model everywhere first: no cold load in a turn
                httpx.post(replica.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False,
                                                                "options": {"num_predict": 1}}, timeout=300)
            with httpx.Client(base_url=next(iter(group.replicas.values())).url, timeout=60) as c:
                tokens = len(c.post("/api/tokenize", json={"model": MODEL, "content": document(
                    0, args.system_words)}).json()["tokens"])
            hosts = [r.host for r in group.replicas.values()]
            for offset, (mode, affinity) in enumerate((("affinity", True), ("round-robin", False))):
                with nginx(root / f"nginx-{mode}", hosts, affinity=affinity) as lb:
                    results[mode] = run_mode(lb.url, args.conversations, args.system_words, offset * 1000)
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; {args.threads} engine threads per replica; "
          f"system prompt ~{tokens} tokens; {args.conversations} conversations per mode")
    print("| mode | turn-2 TTFT median | min-max | turn 2 on turn 1's replica | prompt tokens evaluated (median) |")
    print("|---|---|---|---|---|")
    for mode, rows in results.items():
        ttfts = [r["turn2"]["ttft"] for r in rows]
        evaluated = [r["turn2"]["prompt_eval_count"] or 0 for r in rows]
        same = sum(r["same_replica"] for r in rows)
        print(f"| {mode} | {statistics.median(ttfts):.3f} s | {min(ttfts):.3f}-{max(ttfts):.3f} s | "
              f"{same}/{len(rows)} | {statistics.median(evaluated):.0f} |")
    print(json.dumps({mode: [{"ttft2": round(r["turn2"]["ttft"], 4), "ttft1": round(r["turn1"]["ttft"], 4),
                              "eval2": r["turn2"]["prompt_eval_count"], "same": r["same_replica"]} for r in rows]
                      for mode, rows in results.items()}))


if __name__ == "__main__":
    main()
