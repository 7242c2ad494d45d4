"""The compiler: a parse tree to nested Python closures, one per node, so that executing a template per request
costs a few calls per node and no tree walking.  A :class:`Program` holds the closures of one template set; errors
carry the Go-style location of the failing node."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import nodes
from .builtins import FuncEntry, FuncError, short_circuit, truth
from .errors import MAX_DEPTH, MAX_ITERATIONS, MAX_OUTPUT, TemplateError
from .gofmt import GoStruct, fmt_value, go_type, sorted_items
from .literals import go_quote
from .parser import line_col

__all__ = ["Program", "State"]


_MISSING: Any = object()
"""No value piped in: the first command of a pipeline, or a call without a piped final argument."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class State:
    """One execution's mutable state: output pieces and their size, variables in scope, loop and call counts."""

    __slots__ = ("depth", "out", "size", "steps", "vars")

    def __init__(self, data: Any) -> None:
        self.out: list[str] = []
        self.size = 0
        self.vars: list[list[Any]] = [["$", data]]
        self.steps = 0
        self.depth = 0


_Run = Callable[[State, Any], None]
_Eval = Callable[[State, Any], Any]
_Cmd = Callable[[State, Any, Any], Any]

_K_NONE, _K_FIELD, _K_METHOD, _K_MAP, _K_ATTR = range(5)
_KIND_CACHE: dict[tuple[type, str], int] = {}
_PLAIN = (str, int, float, bool, complex, bytes, bytearray, list, tuple, type(None))


def _member_kind(cls: type, name: str) -> int:
    key = (cls, name)
    kind = _KIND_CACHE.get(key)
    if kind is not None:
        return kind
    m = getattr(cls, name, None)
    if cls.__module__ != "builtins" and name[:1].isupper() and m is not None and callable(m):
        kind = _K_METHOD
    elif issubclass(cls, GoStruct):
        kind = _K_FIELD if name in cls._fields else _K_NONE
    elif issubclass(cls, Mapping):
        kind = _K_MAP
    elif issubclass(cls, _PLAIN) or name.startswith("_"):
        kind = _K_NONE
    else:
        kind = _K_ATTR
    if len(_KIND_CACHE) < 10_000:
        _KIND_CACHE[key] = kind
    return kind


def _print_value(v: Any) -> str:
    if v is None:
        return "<no value>"
    return fmt_value(v)


class Compiler:
    """Turns one parse tree into nested closures; errors carry the Go-style location of the failing node."""

    def __init__(self, program: Program, name: str) -> None:
        self.program = program
        self.name = name
        self.funcs = program.funcs

    def fail(self, node: nodes.Node, msg: str) -> TemplateError:
        line, col = line_col(self.program.source, node.pos)
        ctx = str(node)
        if len(ctx) > 20:
            ctx = ctx[:20] + "..."
        name = go_quote(self.name)
        return TemplateError(f"template: {self.name}:{line}:{col}: executing {name} at <{ctx}>: {msg}")

    # -- statements
    def seq(self, lst: nodes.ListNode) -> _Run:
        items: list[Any] = []
        for n in lst.nodes:
            if isinstance(n, nodes.CommentNode):
                continue
            if isinstance(n, nodes.TextNode):
                if items and isinstance(items[-1], str):
                    items[-1] += n.text
                else:
                    items.append(n.text)
            else:
                items.append(self.node(n))
        if not items:
            return _noop
        if len(items) == 1 and isinstance(items[0], str):
            text = items[0]
            size = len(text)

            def run_text(st: State, dot: Any) -> None:
                st.out.append(text)
                st.size += size
                if st.size > MAX_OUTPUT:
                    raise _overflow()

            return run_text
        if len(items) == 1:
            only: _Run = items[0]
            return only
        seq = tuple(items)

        def run_list(st: State, dot: Any) -> None:
            out = st.out
            for it in seq:
                if it.__class__ is str:
                    out.append(it)
                    st.size += len(it)
                else:
                    it(st, dot)
            if st.size > MAX_OUTPUT:
                raise _overflow()

        return run_list

    def node(self, n: nodes.Node) -> _Run:
        if isinstance(n, nodes.ActionNode):
            return self.action(n)
        if isinstance(n, nodes.IfNode):
            return self.if_with(n, with_=False)
        if isinstance(n, nodes.WithNode):
            return self.if_with(n, with_=True)
        if isinstance(n, nodes.RangeNode):
            return self.range(n)
        if isinstance(n, nodes.TemplateNode):
            return self.template(n)
        if isinstance(n, nodes.ListNode):
            return self.seq(n)
        if isinstance(n, nodes.TextNode):
            return self.seq(nodes.ListNode(n.pos, [n]))
        if isinstance(n, nodes.BreakNode):
            return _run_break
        if isinstance(n, nodes.ContinueNode):
            return _run_continue
        if isinstance(n, nodes.CommentNode):
            return _noop
        raise TemplateError(f"template: {self.name}: unknown node {n!r}")

    def action(self, n: nodes.ActionNode) -> _Run:
        pipe = self.pipe(n.pipe)
        if n.pipe.decl:

            def run_decl(st: State, dot: Any) -> None:
                pipe(st, dot)

            return run_decl

        def run_action(st: State, dot: Any) -> None:
            v = pipe(st, dot)
            s = v if v.__class__ is str else _print_value(v)
            st.out.append(s)
            st.size += len(s)

        return run_action

    def if_with(self, n: nodes.BranchNode, with_: bool) -> _Run:
        pipe = self.pipe(n.pipe)
        body = self.seq(n.list)
        other = self.seq(n.else_list) if n.else_list is not None else None

        def run_if(st: State, dot: Any) -> None:
            mark = len(st.vars)
            v = pipe(st, dot)
            if truth(v):
                body(st, v if with_ else dot)
            elif other is not None:
                other(st, dot)
            del st.vars[mark:]

        return run_if

    def range(self, n: nodes.RangeNode) -> _Run:
        pipe = self.pipe(n.pipe)
        body = self.seq(n.list)
        other = self.seq(n.else_list) if n.else_list is not None else None
        names = [d.ident[0] for d in n.pipe.decl]
        ndecl = len(names)
        assign = n.pipe.is_assign
        fail = self.fail

        def run_range(st: State, dot: Any) -> None:
            mark0 = len(st.vars)
            v = pipe(st, dot)
            mark = len(st.vars)
            items: Iterable[tuple[Any, Any]]
            if isinstance(v, (list, tuple)):
                items = enumerate(v)
            elif isinstance(v, Mapping):
                items = sorted_items(v)
            elif isinstance(v, int) and not isinstance(v, bool):
                if ndecl > 1:
                    raise fail(n, f"can't use {v} to iterate over more than one variable")
                items = ((None, k) for k in range(v))
            elif v is None:
                items = ()
            else:
                raise fail(n, f"range can't iterate over {fmt_value(v)}")
            ran = False
            try:
                for idx, elem in items:
                    ran = True
                    st.steps += 1
                    if st.steps > MAX_ITERATIONS:
                        raise fail(n, f"more than {MAX_ITERATIONS} range iterations")
                    if st.size > MAX_OUTPUT:
                        raise _overflow()
                    if ndecl:
                        if assign:
                            _set_var(st, names[0], idx if ndecl > 1 else elem, n, fail)
                            if ndecl > 1:
                                _set_var(st, names[1], elem, n, fail)
                        else:
                            st.vars[mark - 1][1] = elem
                            if ndecl > 1:
                                st.vars[mark - 2][1] = idx
                    try:  # noqa: SIM105 - contextlib.suppress is slower in this hot loop
                        body(st, elem)
                    except _Continue:
                        pass
                    del st.vars[mark:]
            except _Break:
                del st.vars[mark:]
            if not ran and other is not None:
                other(st, dot)
            del st.vars[mark0:]

        return run_range

    def template(self, n: nodes.TemplateNode) -> _Run:
        pipe = self.pipe(n.pipe) if n.pipe is not None else None
        program = self.program
        name = n.name
        fail = self.fail

        def run_template(st: State, dot: Any) -> None:
            body = program.tree(name)
            if body is None:
                raise fail(n, f"template {go_quote(name)} not defined")
            if st.depth >= MAX_DEPTH:
                raise fail(n, f"exceeded maximum template depth ({MAX_DEPTH})")
            st.steps += 1
            if st.steps > MAX_ITERATIONS:
                raise fail(n, f"more than {MAX_ITERATIONS} range iterations and template calls")
            newdot = pipe(st, dot) if pipe is not None else None
            saved = st.vars
            st.vars = [["$", newdot]]
            st.depth += 1
            try:
                body(st, newdot)
            finally:
                st.vars = saved
                st.depth -= 1

        return run_template

    # -- expressions
    def pipe(self, p: nodes.PipeNode) -> _Eval:
        cmds = [self.command(c) for c in p.cmds]
        names = [d.ident[0] for d in p.decl]
        assign = p.is_assign
        fail = self.fail
        if len(cmds) == 1 and not names:
            c0 = cmds[0]

            def run_one(st: State, dot: Any) -> Any:
                return c0(st, dot, _MISSING)

            return run_one

        def run_pipe(st: State, dot: Any) -> Any:
            v = _MISSING
            for c in cmds:
                v = c(st, dot, v)
            for name in names:
                if assign:
                    _set_var(st, name, v, p, fail)
                else:
                    st.vars.append([name, v])
            return v

        return run_pipe

    def command(self, cmd: nodes.CommandNode) -> _Cmd:
        first = cmd.args[0]
        rest = cmd.args[1:]
        fail = self.fail
        if isinstance(first, nodes.FieldNode):
            return self.field_chain(first, None, first.ident, rest)
        if isinstance(first, nodes.VariableNode):
            if len(first.ident) > 1:
                return self.field_chain(first, self.variable(first.ident[0], first), first.ident[1:], rest)
            get = self.variable(first.ident[0], first)
            value_cmd = self.no_args(get, first, bool(rest))
            return value_cmd
        if isinstance(first, nodes.ChainNode):
            return self.field_chain(first, self.arg(first.node), first.fields, rest)
        if isinstance(first, nodes.IdentifierNode):
            return self.call(first, rest, cmd)
        if isinstance(first, nodes.PipeNode):
            return self.no_args(self.pipe(first), first, bool(rest))
        if isinstance(first, nodes.NilNode):

            def run_nil(st: State, dot: Any, final: Any) -> Any:
                raise fail(first, "nil is not a command")

            return run_nil
        return self.no_args(self.arg(first), first, bool(rest))

    def no_args(self, get: _Eval, node: nodes.Node, has_rest: bool) -> _Cmd:
        fail = self.fail

        def run_value(st: State, dot: Any, final: Any) -> Any:
            if has_rest or final is not _MISSING:
                raise fail(node, f"can't give argument to non-function {node}")
            return get(st, dot)

        return run_value

    def variable(self, name: str, node: nodes.Node) -> _Eval:
        fail = self.fail
        if name == "$":

            def run_root(st: State, dot: Any) -> Any:
                return st.vars[0][1]

            return run_root

        def run_var(st: State, dot: Any) -> Any:
            vs = st.vars
            i = len(vs) - 1
            while i >= 0:
                if vs[i][0] == name:
                    return vs[i][1]
                i -= 1
            raise fail(node, f"undefined variable: {name}")

        return run_var

    def field_chain(
        self, node: nodes.Node, receiver: _Eval | None, ident: tuple[str, ...], rest: list[nodes.Node]
    ) -> _Cmd:
        arg_fns = [self.arg(a) for a in rest]
        fail = self.fail
        head = ident[:-1]
        last = ident[-1]
        if receiver is None and not head and not arg_fns:

            def run_field1(st: State, dot: Any, final: Any) -> Any:
                if final is _MISSING:
                    cls = dot.__class__
                    if cls is dict:
                        return dot.get(last)
                    if _KIND_CACHE.get((cls, last)) == _K_FIELD:
                        return getattr(dot, last)
                return _field(st, dot, dot, last, (), final, node, fail)

            return run_field1

        def run_fields(st: State, dot: Any, final: Any) -> Any:
            v = dot if receiver is None else receiver(st, dot)
            for name in head:
                v = v.get(name) if v.__class__ is dict else _field(st, dot, v, name, (), _MISSING, node, fail)
            return _field(st, dot, v, last, arg_fns, final, node, fail)

        return run_fields

    def call(self, ident: nodes.IdentifierNode, rest: list[nodes.Node], cmd: nodes.CommandNode | None = None) -> _Cmd:
        name = ident.name
        fail = self.fail
        arg_fns = [self.arg(a) for a in rest]
        entry = self.funcs.get(name)
        if entry is None:  # the parser checks names; a custom table could still lose one

            def run_missing(st: State, dot: Any, final: Any) -> Any:
                raise fail(ident, f"{go_quote(name)} is not a defined function")

            return run_missing
        fn, lo, hi = entry
        where: nodes.Node = cmd if cmd is not None else ident
        if name in ("and", "or") and fn is short_circuit:
            want = name == "or"

            def run_andor(st: State, dot: Any, final: Any) -> Any:
                if not arg_fns and final is _MISSING:
                    raise fail(ident, f"wrong number of args for {name}: want at least 1 got 0")
                v = None
                for f in arg_fns:
                    v = f(st, dot)
                    if truth(v) == want:
                        return v
                if final is not _MISSING:
                    v = final
                return v

            return run_andor

        def run_call(st: State, dot: Any, final: Any) -> Any:
            args = [f(st, dot) for f in arg_fns]
            if final is not _MISSING:
                args.append(final)
            n = len(args)
            if n < lo or (hi is not None and n > hi):
                if hi == lo:
                    raise fail(ident, f"wrong number of args for {name}: want {lo} got {n}")
                raise fail(ident, f"wrong number of args for {name}: want at least {lo} got {n}")
            try:
                return fn(*args)
            except (TemplateError, _Break, _Continue, RecursionError, MemoryError):
                raise
            except Exception as e:
                raise fail(where, f"error calling {name}: {e}") from None

        return run_call

    def arg(self, n: nodes.Node) -> _Eval:
        if isinstance(n, nodes.FieldNode) and len(n.ident) == 1:
            last = n.ident[0]
            fail = self.fail

            def run_field_arg(st: State, dot: Any) -> Any:
                cls = dot.__class__
                if cls is dict:
                    return dot.get(last)
                if _KIND_CACHE.get((cls, last)) == _K_FIELD:
                    return getattr(dot, last)
                return _field(st, dot, dot, last, (), _MISSING, n, fail)

            return run_field_arg
        if isinstance(n, nodes.VariableNode) and len(n.ident) == 1:
            return self.variable(n.ident[0], n)
        if isinstance(n, (nodes.FieldNode, nodes.VariableNode, nodes.ChainNode, nodes.IdentifierNode)):
            cmd = self.command(nodes.CommandNode(n.pos, [n]))

            def run_arg(st: State, dot: Any) -> Any:
                return cmd(st, dot, _MISSING)

            return run_arg
        if isinstance(n, nodes.PipeNode):
            return self.pipe(n)
        if isinstance(n, nodes.DotNode):
            return _dot
        if isinstance(n, nodes.NilNode):
            return _nil
        if isinstance(n, (nodes.BoolNode, nodes.NumberNode)):
            return _const(n.value)
        if isinstance(n, nodes.StringNode):
            return _const(n.text)
        raise TemplateError(f"template: {self.name}: can't evaluate {n}")


def _const(value: Any) -> _Eval:
    def run_const(st: State, dot: Any) -> Any:
        return value

    return run_const


def _dot(st: State, dot: Any) -> Any:
    return dot


def _nil(st: State, dot: Any) -> Any:
    return None


def _noop(st: State, dot: Any) -> None:
    return None


def _run_break(st: State, dot: Any) -> None:
    raise _Break


def _run_continue(st: State, dot: Any) -> None:
    raise _Continue


def _overflow() -> TemplateError:
    return TemplateError(f"template: output exceeds {MAX_OUTPUT} characters")


def _set_var(
    st: State, name: str, value: Any, node: nodes.Node, fail: Callable[[nodes.Node, str], TemplateError]
) -> None:
    vs = st.vars
    i = len(vs) - 1
    while i >= 0:
        if vs[i][0] == name:
            vs[i][1] = value
            return
        i -= 1
    raise fail(node, f"undefined variable: {name}")


def _invoke(
    fn: Callable[..., Any], args: list[Any], name: str, node: nodes.Node, fail: Callable[..., TemplateError]
) -> Any:
    try:
        return fn(*args)
    except TemplateError:
        raise
    except (_Break, _Continue, RecursionError, MemoryError):
        raise
    except FuncError as e:
        raise fail(node, f"error calling {name}: {e}") from None
    except Exception as e:
        raise fail(node, f"error calling {name}: {e}") from None


def _field(
    st: State,
    dot: Any,
    recv: Any,
    name: str,
    arg_fns: Iterable[_Eval] | tuple[()],
    final: Any,
    node: nodes.Node,
    fail: Callable[[nodes.Node, str], TemplateError],
) -> Any:
    """Go's ``evalField``: method call, struct field or map key, in that order."""
    has_args = bool(arg_fns) or final is not _MISSING
    cls = recv.__class__
    if cls is dict:
        if has_args:
            raise fail(node, f"{name} is not a method but has arguments")
        return recv.get(name)
    if recv is None:
        raise fail(node, f"nil pointer evaluating interface {{}}.{name}")
    kind = _member_kind(cls, name)
    if kind == _K_FIELD:
        if has_args:
            raise fail(node, f"{name} has arguments but cannot be invoked as function")
        return getattr(recv, name)
    if kind == _K_MAP:
        if has_args:
            raise fail(node, f"{name} is not a method but has arguments")
        try:
            return recv.get(name)
        except TypeError:
            return None
    if kind in (_K_METHOD, _K_ATTR):
        try:
            member = getattr(recv, name)
        except AttributeError:
            raise fail(node, f"can't evaluate field {name} in type {go_type(recv)}") from None
        if kind == _K_METHOD or callable(member):
            args = [f(st, dot) for f in arg_fns]
            if final is not _MISSING:
                args.append(final)
            return _invoke(member, args, name, node, fail)
        if has_args:
            raise fail(node, f"{name} has arguments but cannot be invoked as function")
        return member
    raise fail(node, f"can't evaluate field {name} in type {go_type(recv)}")


class Program:
    """The closures of one template set: the main tree compiled at once, each ``{{define}}``d tree at its first
    ``{{template}}`` call (most never run).  ``run(State(data), data)`` executes the main tree."""

    __slots__ = ("_compiled", "funcs", "name", "root", "run", "source", "trees")

    def __init__(
        self,
        source: str,
        name: str,
        root: nodes.ListNode,
        trees: Mapping[str, nodes.ListNode],
        funcs: Mapping[str, FuncEntry],
    ) -> None:
        self.source = source
        self.name = name
        self.root = root
        self.trees = trees
        self.funcs = funcs
        self._compiled: dict[str, _Run] = {}
        self.run: _Run = Compiler(self, name).seq(root)

    def tree(self, name: str) -> _Run | None:
        """The compiled body of template ``name`` (the main tree under its own name), or None if undefined."""
        run = self._compiled.get(name)
        if run is None:
            tree = self.trees.get(name)
            if tree is None:
                if name != self.name:
                    return None
                tree = self.root
            run = Compiler(self, name).seq(tree)
            self._compiled[name] = run
        return run
