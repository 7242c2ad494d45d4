"""An interpreter for Go's ``text/template`` language, as Ollama uses it for model ``TEMPLATE`` layers.

Ollama models carry their chat format as a Go template, so Corral has to render those templates byte for byte
as Go does: the same trim markers, truthiness, ``range`` order, comparison rules, ``print``/``printf`` formatting
and ``json`` output.  The template is parsed once into a public AST (so later code can inspect it, e.g. to find
the tool-call tag) and compiled into Python closures, so executing it per request is cheap.

Data model: Python values stand in for Go values.  A ``dict`` is a Go ``map[string]any`` (a missing key gives
``nil``, printed as ``<no value>``, as Go does under ``missingkey=zero`` for interface-valued maps); a list is a
slice; ``None`` is ``nil``; ``int``/``float``/``str``/``bool`` are the Go basic kinds.  :class:`GoStruct`
subclasses behave as Go structs (unknown fields are errors, JSON follows their tags).  Any value whose class
defines a ``String()`` method prints through it, as a Go ``fmt.Stringer`` does.

Modules: :mod:`.lexer` (source to tokens), :mod:`.parser` (tokens to the :mod:`.nodes` tree, with
:mod:`.literals` for constants), :mod:`.compiler` (tree to closures, and running them), :mod:`.builtins` (the
function table), :mod:`.gofmt` (Go values and their printing), :mod:`.gojson` (their JSON), :mod:`.errors`.
Everything a caller needs is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import nodes
from .builtins import BUILTINS, FuncEntry
from .compiler import Program, State
from .errors import MAX_DEPTH, MAX_ITERATIONS, MAX_OUTPUT, TemplateError
from .gofmt import GoStruct, go_sprint, go_sprintf
from .gojson import NIL_EMPTY, OMITEMPTY, OMITNIL, go_json
from .nodes import *  # noqa: F403 - the parse tree's node classes are part of the package's API
from .parser import Parser

__all__ = [
    "BUILTINS",
    "MAX_DEPTH",
    "MAX_ITERATIONS",
    "MAX_OUTPUT",
    "NIL_EMPTY",
    "OMITEMPTY",
    "OMITNIL",
    "GoStruct",
    "Template",
    "TemplateError",
    "go_json",
    "go_sprint",
    "go_sprintf",
    "parse",
]
__all__ += nodes.__all__


def _identifiers(node: nodes.Node | None, out: list[str]) -> None:
    """Ollama's ``template.Identifiers``: field and variable names, walking only the node kinds Ollama walks."""
    if node is None:
        return
    if isinstance(node, nodes.ListNode):
        for n in node.nodes:
            _identifiers(n, out)
    elif isinstance(node, (nodes.ActionNode, nodes.TemplateNode)):
        _identifiers(node.pipe, out)
    elif isinstance(node, nodes.BranchNode):
        _identifiers(node.pipe, out)
        _identifiers(node.list, out)
        _identifiers(node.else_list, out)
    elif isinstance(node, nodes.PipeNode):
        for c in node.cmds:
            for a in c.args:
                _identifiers(a, out)
    elif isinstance(node, (nodes.FieldNode, nodes.VariableNode)):
        out.extend(node.ident)


class Template:
    """A parsed template: parse once with :func:`parse`, then :meth:`execute` as often as needed."""

    __slots__ = ("_run", "_vars", "cache", "funcs", "name", "root", "source", "trees")

    def __init__(
        self,
        source: str,
        root: nodes.ListNode,
        trees: dict[str, nodes.ListNode] | None = None,
        *,
        name: str = "",
        funcs: Mapping[str, FuncEntry] | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.root = root
        self.trees: dict[str, nodes.ListNode] = trees if trees is not None else {}
        self.funcs: Mapping[str, FuncEntry] = funcs if funcs is not None else BUILTINS
        self.cache: dict[str, Any] = {}
        """Derived forms kept by callers (e.g. Ollama's legacy cut, see ``corral.templates.prompt``)."""
        self._vars: frozenset[str] | None = None
        self._run = Program(source, name, root, self.trees, self.funcs).run

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def with_root(self, root: nodes.ListNode) -> Template:
        """A template with the same source, defined templates and functions but another main tree."""
        return Template(self.source, root, self.trees, name=self.name, funcs=self.funcs)

    @property
    def vars(self) -> frozenset[str]:
        """Lower-cased names of every field and variable the template uses (Ollama's ``Template.Vars``)."""
        if self._vars is None:
            out: list[str] = []
            _identifiers(self.root, out)
            for tree in self.trees.values():
                _identifiers(tree, out)
            self._vars = frozenset(s.lower() for s in out)
        return self._vars

    def references(self, field: str) -> bool:
        """Whether the template uses ``.Field`` (or ``$.Field``, ``$x.Field``) anywhere; case-insensitive, as Ollama."""
        return field.lower() in self.vars

    def execute(self, data: Any) -> str:
        """Render with ``data`` as dot and ``$``; raises :class:`TemplateError` on any execution error."""
        st = State(data)
        try:
            self._run(st, data)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError("template: execution nested too deeply") from None
        except MemoryError:
            raise TemplateError("template: out of memory") from None
        except Exception as e:  # a bug here must still surface as a template failure, never crash a request
            raise TemplateError(f"template: internal error: {type(e).__name__}: {e}") from None
        return "".join(st.out)


def parse(
    source: str,
    *,
    name: str = "",
    funcs: Mapping[str, Callable[..., Any]] | None = None,
) -> Template:
    """Parse Go template source; ``funcs`` adds functions (called with the evaluated arguments).

    Raises :class:`TemplateError` (with line and column) for invalid templates, as ``template.Parse`` would."""
    table: Mapping[str, FuncEntry] = BUILTINS
    if funcs:
        table = {**BUILTINS, **{k: (f, 0, None) for k, f in funcs.items()}}
    if not isinstance(source, str):
        raise TemplateError("template: source is not a string")
    try:
        p = Parser(source, name, table)
        root = p.parse()
        return Template(source, root, p.trees, name=name, funcs=table)
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    except Exception as e:
        raise TemplateError(f"template: internal error: {type(e).__name__}: {e}") from None
