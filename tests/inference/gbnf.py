"""A small GBNF recognizer for tests: does a grammar (as llama.cpp reads it) accept a text?

It covers what corral.inference.grammar writes (one rule per line; literals, character classes, groups,
alternation, ``* + ?`` and ``{m}``/``{m,}``/``{m,n}``), computing the set of positions a node can end at from a
start position, so it needs no backtracking and no left recursion (GBNF has none).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

Node = tuple[Any, ...]


def parse(grammar: str) -> dict[str, Node]:
    rules: dict[str, Node] = {}
    for line in grammar.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, body = line.partition(" ::= ")
        parser = _Parser(body)
        rules[name.strip()] = parser.alternation()
        assert parser.pos == len(body), f"trailing text in rule {name}: {body[parser.pos:]!r}"
    return rules


@dataclass
class _Parser:
    text: str
    pos: int = 0

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def alternation(self) -> Node:
        alts = [self.sequence()]
        self._skip()
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            alts.append(self.sequence())
            self._skip()
        return ("alt", tuple(alts)) if len(alts) > 1 else alts[0]

    def sequence(self) -> Node:
        items = []
        while True:
            self._skip()
            if self.pos >= len(self.text) or self.text[self.pos] in "|)":
                break
            items.append(self.postfix(self.atom()))
        return ("seq", tuple(items))

    def atom(self) -> Node:
        ch = self.text[self.pos]
        if ch == '"':
            self.pos += 1
            out = []
            while self.text[self.pos] != '"':
                out.append(self._char())
            self.pos += 1
            return ("lit", "".join(out))
        if ch == "[":
            self.pos += 1
            negate = self.text[self.pos] == "^"
            if negate:
                self.pos += 1
            ranges = []
            while self.text[self.pos] != "]":
                low = self._char()
                high = low
                if self.text[self.pos] == "-" and self.text[self.pos + 1] != "]":
                    self.pos += 1
                    high = self._char()
                ranges.append((low, high))
            self.pos += 1
            return ("cls", negate, tuple(ranges))
        if ch == "(":
            self.pos += 1
            inner = self.alternation()
            self._skip()
            assert self.text[self.pos] == ")", self.text[self.pos:]
            self.pos += 1
            return inner
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "-"):
            self.pos += 1
        assert self.pos > start, f"unexpected {self.text[start:]!r}"
        return ("ref", self.text[start:self.pos])

    def _char(self) -> str:
        ch = self.text[self.pos]
        if ch != "\\":
            self.pos += 1
            return ch
        esc = self.text[self.pos + 1]
        if esc == "x":
            value = int(self.text[self.pos + 2:self.pos + 4], 16)
            self.pos += 4
            return chr(value)
        if esc == "u":
            value = int(self.text[self.pos + 2:self.pos + 6], 16)
            self.pos += 6
            return chr(value)
        self.pos += 2
        return {"n": "\n", "r": "\r", "t": "\t"}.get(esc, esc)

    def postfix(self, node: Node) -> Node:
        if self.pos >= len(self.text):
            return node
        ch = self.text[self.pos]
        if ch in "*+?":
            self.pos += 1
            return ("rep", node, {"*": 0, "+": 1, "?": 0}[ch], 1 if ch == "?" else None)
        if ch == "{":
            end = self.text.index("}", self.pos)
            spec = self.text[self.pos + 1:end]
            self.pos = end + 1
            if "," in spec:
                low, high = spec.split(",")
                return ("rep", node, int(low), int(high) if high else None)
            return ("rep", node, int(spec), int(spec))
        return node


def accepts(grammar: str, text: str) -> bool:
    rules = parse(grammar)

    @functools.cache
    def rule_ends(name: str, i: int) -> frozenset[int]:
        return frozenset(ends(rules[name], i))

    def ends(node: Node, i: int) -> set[int]:
        kind = node[0]
        if kind == "lit":
            return {i + len(node[1])} if text.startswith(node[1], i) else set()
        if kind == "cls":
            if i >= len(text):
                return set()
            inside = any(low <= text[i] <= high for low, high in node[2])
            return {i + 1} if inside != node[1] else set()
        if kind == "ref":
            return set(rule_ends(node[1], i))
        if kind == "alt":
            return set().union(*(ends(a, i) for a in node[1]))
        if kind == "seq":
            positions = {i}
            for item in node[1]:
                positions = set().union(*(ends(item, p) for p in positions)) if positions else set()
            return positions
        if kind == "rep":
            _, inner, low, high = node
            out: set[int] = {i} if low == 0 else set()
            frontier, count, seen = {i}, 0, {i}
            while frontier and (high is None or count < high):
                count += 1
                frontier = set().union(*(ends(inner, p) for p in frontier))
                if high is None:
                    frontier -= seen
                    seen |= frontier
                if count >= low:
                    out |= frontier
            return out
        raise AssertionError(kind)

    return len(text) in rule_ends("root", 0)
