"""The parser: tokens to a tree of :mod:`.nodes`, a recursive descent with the grammar, checks and error messages
of Go's ``text/template/parse``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import nodes
from .errors import MAX_DEPTH, TemplateError
from .lexer import (
    T_ASSIGN,
    T_BLOCK,
    T_BOOL,
    T_BREAK,
    T_CHAR,
    T_CHARCONST,
    T_COMMENT,
    T_COMPLEX,
    T_CONTINUE,
    T_DECLARE,
    T_DEFINE,
    T_DOT,
    T_ELSE,
    T_END,
    T_EOF,
    T_ERROR,
    T_FIELD,
    T_IDENT,
    T_IF,
    T_LDELIM,
    T_LPAREN,
    T_NIL,
    T_NUMBER,
    T_PIPE,
    T_RANGE,
    T_RAWSTRING,
    T_RDELIM,
    T_RPAREN,
    T_SPACE,
    T_STRING,
    T_TEMPLATE,
    T_TEXT,
    T_VAR,
    T_WITH,
    Token,
    lex,
)
from .literals import go_quote, parse_char, parse_number, unquote

__all__ = ["Parser", "line_col"]


class _End(nodes.Node):
    """``{{end}}``: closes the list being parsed; never left in a tree."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{end}}"


class _Else(nodes.Node):
    """``{{else}}``: ends a branch's body; never left in a tree."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{else}}"


_CONSTANTS = (nodes.BoolNode, nodes.DotNode, nodes.NilNode, nodes.NumberNode, nodes.StringNode)
"""Operands that cannot take a piped value: Go's "non executable command" after the first pipeline stage."""


def line_col(src: str, pos: int) -> tuple[int, int]:
    """1-based line and column of an offset, for Go-style ``name:line:col`` messages."""
    pos = max(0, min(pos, len(src)))
    line = src.count("\n", 0, pos) + 1
    col = pos - (src.rfind("\n", 0, pos) + 1) + 1
    return line, col


class Parser:
    """Recursive-descent parser mirroring ``text/template/parse`` (same grammar, checks and messages)."""

    def __init__(self, src: str, name: str, funcs: Mapping[str, Any]) -> None:
        self.src = src
        self.name = name
        self.funcs = funcs
        self.toks = lex(src)
        self.i = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.depth = 0
        self.trees: dict[str, nodes.ListNode] = {}

    # -- token helpers
    def next(self) -> Token:
        toks = self.toks
        tok = toks[self.i] if self.i < len(toks) else toks[-1]
        self.i += 1
        return tok

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> Token:
        toks = self.toks
        return toks[self.i] if self.i < len(toks) else toks[-1]

    def next_non_space(self) -> Token:
        tok = self.next()
        while tok.typ == T_SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> Token:
        tok = self.next_non_space()
        self.backup()
        return tok

    def error(self, msg: str, pos: int | None = None) -> TemplateError:
        if pos is None:
            pos = self.toks[max(min(self.i, len(self.toks)) - 1, 0)].pos
        line, col = line_col(self.src, pos)
        return TemplateError(f"template: {self.name}:{line}:{col}: {msg}")

    def unexpected(self, tok: Token, context: str) -> TemplateError:
        if tok.typ == T_ERROR:
            return self.error(tok.val, tok.pos)
        return self.error(f"unexpected {tok} in {context}", tok.pos)

    def expect(self, typ: int, context: str) -> Token:
        tok = self.next_non_space()
        if tok.typ != typ:
            raise self.unexpected(tok, context)
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"template nesting deeper than {MAX_DEPTH}")

    # -- grammar
    def parse(self) -> nodes.ListNode:
        root = nodes.ListNode(0)
        while self.peek().typ != T_EOF:
            if self.peek().typ == T_LDELIM:
                save = self.i
                self.next()
                if self.next_non_space().typ == T_DEFINE:
                    self.parse_definition()
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                raise self.error(f"unexpected {node}", node.pos)
            root.nodes.append(node)
        return root

    def add_tree(self, name: str, body: nodes.ListNode, pos: int) -> None:
        old = self.trees.get(name)
        if old is not None and not _is_empty_tree(old):
            if _is_empty_tree(body):
                return
            raise self.error(f"template: multiple definition of template {go_quote(name)}", pos)
        self.trees[name] = body

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (T_STRING, T_RAWSTRING):
            raise self.unexpected(tok, context)
        name = self.unquote(tok)
        self.expect(T_RDELIM, context)
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        self.enter()
        body, end = self.item_list()
        self.depth -= 1
        if not isinstance(end, _End):
            raise self.error(f"unexpected {end} in {context}", end.pos)
        self.vars, self.range_depth = saved
        self.add_tree(name, body, tok.pos)

    def item_list(self) -> tuple[nodes.ListNode, nodes.Node]:
        lst = nodes.ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != T_EOF:
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                return lst, node
            lst.nodes.append(node)
        raise self.error("unexpected EOF", len(self.src))

    def text_or_action(self) -> nodes.Node:
        tok = self.next_non_space()
        if tok.typ == T_TEXT:
            return nodes.TextNode(tok.pos, tok.val)
        if tok.typ == T_LDELIM:
            return self.action()
        if tok.typ == T_COMMENT:
            return nodes.CommentNode(tok.pos, tok.val)
        raise self.unexpected(tok, "input")

    def action(self) -> nodes.Node:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == T_BLOCK:
            return self.block_control(tok)
        if typ in (T_BREAK, T_CONTINUE):
            word = tok.val
            nxt = self.next_non_space()
            if nxt.typ != T_RDELIM:
                raise self.unexpected(nxt, "{{" + word + "}}")
            if self.range_depth == 0:
                raise self.error("{{" + word + "}} outside {{range}}", tok.pos)
            return nodes.BreakNode(tok.pos) if typ == T_BREAK else nodes.ContinueNode(tok.pos)
        if typ == T_ELSE:
            pk = self.peek_non_space()
            if pk.typ in (T_IF, T_WITH):
                return _Else(pk.pos)
            return _Else(self.expect(T_RDELIM, "else").pos)
        if typ == T_END:
            return _End(self.expect(T_RDELIM, "end").pos)
        if typ == T_IF:
            return nodes.IfNode(tok.pos, *self.parse_control("if"))
        if typ == T_RANGE:
            return nodes.RangeNode(tok.pos, *self.parse_control("range"))
        if typ == T_WITH:
            return nodes.WithNode(tok.pos, *self.parse_control("with"))
        if typ == T_TEMPLATE:
            return self.template_control()
        self.backup()
        tok = self.peek()
        return nodes.ActionNode(tok.pos, self.pipeline("command", T_RDELIM))

    def parse_control(self, context: str) -> tuple[nodes.PipeNode, nodes.ListNode, nodes.ListNode | None]:
        nvars = len(self.vars)
        self.enter()
        pipe = self.pipeline(context, T_RDELIM)
        if context == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if context == "range":
            self.range_depth -= 1
        else_list: nodes.ListNode | None = None
        if isinstance(nxt, _Else):
            if context == "if" and self.peek().typ == T_IF:
                tok = self.next()
                else_list = nodes.ListNode(nxt.pos, [nodes.IfNode(tok.pos, *self.parse_control("if"))])
            elif context == "with" and self.peek().typ == T_WITH:
                tok = self.next()
                else_list = nodes.ListNode(nxt.pos, [nodes.WithNode(tok.pos, *self.parse_control("with"))])
            else:
                else_list, end = self.item_list()
                if not isinstance(end, _End):
                    raise self.error(f"expected end; found {end}", end.pos)
        self.depth -= 1
        del self.vars[nvars:]
        return pipe, body, else_list

    def template_name(self, tok: Token, context: str) -> str:
        if tok.typ not in (T_STRING, T_RAWSTRING):
            raise self.unexpected(tok, context)
        return self.unquote(tok)

    def template_control(self) -> nodes.Node:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.next_non_space().typ != T_RDELIM:
            self.backup()
            pipe = self.pipeline(context, T_RDELIM)
        return nodes.TemplateNode(tok.pos, name, pipe)

    def block_control(self, start: Token) -> nodes.Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, T_RDELIM)
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        self.enter()
        body, end = self.item_list()
        self.depth -= 1
        self.vars, self.range_depth = saved
        if not isinstance(end, _End):
            raise self.error(f"unexpected {end} in {context}", end.pos)
        self.add_tree(name, body, tok.pos)
        return nodes.TemplateNode(start.pos, name, pipe)

    def pipeline(self, context: str, end: int) -> nodes.PipeNode:
        pipe = nodes.PipeNode(self.peek_non_space().pos)
        while True:
            v = self.peek_non_space()
            if v.typ != T_VAR:
                break
            vi = self.i
            self.next()
            nxt = self.peek_non_space()
            if nxt.typ in (T_ASSIGN, T_DECLARE):
                pipe.is_assign = nxt.typ == T_ASSIGN
                self.next_non_space()
                pipe.decl.append(nodes.VariableNode(v.pos, (v.val,)))
                self.vars.append(v.val)
            elif nxt.typ == T_CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(nodes.VariableNode(v.pos, (v.val,)))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T_VAR, T_RDELIM, T_RPAREN):
                        continue
                    raise self.error("range can only initialize variables", nxt.pos)
                raise self.error(f"too many declarations in {context}", nxt.pos)
            else:
                self.i = vi
            break
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                if not pipe.cmds:
                    raise self.error(f"missing value for {context}", tok.pos)
                for k, cmd in enumerate(pipe.cmds[1:]):
                    if isinstance(cmd.args[0], _CONSTANTS):
                        raise self.error(f"non executable command in pipeline stage {k + 2}", cmd.pos)
                return pipe
            if tok.typ in (
                T_BOOL,
                T_CHARCONST,
                T_COMPLEX,
                T_DOT,
                T_FIELD,
                T_IDENT,
                T_NUMBER,
                T_NIL,
                T_RAWSTRING,
                T_STRING,
                T_VAR,
                T_LPAREN,
            ):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)

    def command(self) -> nodes.CommandNode:
        cmd = nodes.CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == T_SPACE:
                continue
            if tok.typ in (T_RDELIM, T_RPAREN):
                self.backup()
            elif tok.typ != T_PIPE:
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.error("empty command", cmd.pos)
        return cmd

    def operand(self) -> nodes.Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == T_FIELD:
            fields: list[str] = []
            while self.peek().typ == T_FIELD:
                fields.append(self.next().val[1:])
            if isinstance(node, nodes.FieldNode):
                return nodes.FieldNode(node.pos, node.ident + tuple(fields))
            if isinstance(node, nodes.VariableNode):
                return nodes.VariableNode(node.pos, node.ident + tuple(fields))
            if isinstance(node, (nodes.BoolNode, nodes.StringNode, nodes.NumberNode, nodes.NilNode, nodes.DotNode)):
                raise self.error(f"unexpected . after term {go_quote(str(node))}", node.pos)
            return nodes.ChainNode(node.pos, node, tuple(fields))
        return node

    def term(self) -> nodes.Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == T_IDENT:
            if tok.val not in self.funcs:
                raise self.error(f"function {go_quote(tok.val)} not defined", tok.pos)
            return nodes.IdentifierNode(tok.pos, tok.val)
        if typ == T_DOT:
            return nodes.DotNode(tok.pos)
        if typ == T_NIL:
            return nodes.NilNode(tok.pos)
        if typ == T_VAR:
            if tok.val not in self.vars:
                raise self.error(f"undefined variable {go_quote(tok.val)}", tok.pos)
            return nodes.VariableNode(tok.pos, (tok.val,))
        if typ == T_FIELD:
            return nodes.FieldNode(tok.pos, (tok.val[1:],))
        if typ == T_BOOL:
            return nodes.BoolNode(tok.pos, tok.val == "true")
        if typ in (T_NUMBER, T_CHARCONST, T_COMPLEX):
            try:
                value = parse_char(tok.val) if typ == T_CHARCONST else parse_number(tok.val)
                return nodes.NumberNode(tok.pos, tok.val, value)
            except ValueError as e:
                raise self.error(str(e), tok.pos) from None
        if typ == T_LPAREN:
            self.enter()
            pipe = self.pipeline("parenthesized pipeline", T_RPAREN)
            self.depth -= 1
            return pipe
        if typ in (T_STRING, T_RAWSTRING):
            return nodes.StringNode(tok.pos, tok.val, self.unquote(tok))
        self.backup()
        return None

    def unquote(self, tok: Token) -> str:
        try:
            return unquote(tok.val)
        except ValueError as e:
            raise self.error(str(e), tok.pos) from None


def _is_empty_tree(node: nodes.Node) -> bool:
    if isinstance(node, nodes.ListNode):
        return all(_is_empty_tree(n) for n in node.nodes)
    if isinstance(node, nodes.TextNode):
        return not node.text.strip()
    return isinstance(node, nodes.CommentNode)
