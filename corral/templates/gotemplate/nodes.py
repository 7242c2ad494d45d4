"""The parse tree: the node kinds of Go's ``text/template/parse``, public so callers can inspect a template (e.g.
to find the tool-call tag) or rewrite it (Ollama's legacy cut at ``.Response``)."""

from __future__ import annotations

from typing import ClassVar

from .literals import go_quote

__all__ = [
    "ActionNode",
    "BoolNode",
    "BranchNode",
    "BreakNode",
    "ChainNode",
    "CommandNode",
    "CommentNode",
    "ContinueNode",
    "DotNode",
    "FieldNode",
    "IdentifierNode",
    "IfNode",
    "ListNode",
    "NilNode",
    "Node",
    "NumberNode",
    "PipeNode",
    "RangeNode",
    "StringNode",
    "TemplateNode",
    "TextNode",
    "VariableNode",
    "WithNode",
]



class Node:
    """Base of all parse-tree nodes; ``pos`` is the offset of the node in the template source."""

    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


class TextNode(Node):
    """Plain text between actions (already trimmed by ``{{-``/``-}}``)."""

    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return go_quote(self.text)


class CommentNode(Node):
    """A ``{{/* ... */}}`` comment; kept in the tree, produces no output."""

    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


class ListNode(Node):
    """A sequence of nodes."""

    __slots__ = ("nodes",)

    def __init__(self, pos: int, nodes: list[Node] | None = None) -> None:
        super().__init__(pos)
        self.nodes: list[Node] = nodes if nodes is not None else []

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class FieldNode(Node):
    """``.A.B``: field (or map key, or niladic method) lookups starting at dot."""

    __slots__ = ("ident",)

    def __init__(self, pos: int, ident: tuple[str, ...]) -> None:
        super().__init__(pos)
        self.ident = ident

    def __str__(self) -> str:
        return "." + ".".join(self.ident)


class VariableNode(Node):
    """``$x`` or ``$x.A.B``; ``ident[0]`` is the variable name including ``$``."""

    __slots__ = ("ident",)

    def __init__(self, pos: int, ident: tuple[str, ...]) -> None:
        super().__init__(pos)
        self.ident = ident

    def __str__(self) -> str:
        return ".".join(self.ident)


class ChainNode(Node):
    """``(pipeline).A.B``: field lookups on the value of another term."""

    __slots__ = ("fields", "node")

    def __init__(self, pos: int, node: Node, fields: tuple[str, ...]) -> None:
        super().__init__(pos)
        self.node = node
        self.fields = fields

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


class IdentifierNode(Node):
    """A function name."""

    __slots__ = ("name",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.name = name

    def __str__(self) -> str:
        return self.name


class DotNode(Node):
    """``.``, the cursor."""

    __slots__ = ()

    def __str__(self) -> str:
        return "."


class NilNode(Node):
    """The untyped ``nil`` literal."""

    __slots__ = ()

    def __str__(self) -> str:
        return "nil"


class BoolNode(Node):
    """``true`` or ``false``."""

    __slots__ = ("value",)

    def __init__(self, pos: int, value: bool) -> None:
        super().__init__(pos)
        self.value = value

    def __str__(self) -> str:
        return "true" if self.value else "false"


class NumberNode(Node):
    """A numeric or character constant; ``value`` is the Go ideal constant's value (``int`` or ``float``)."""

    __slots__ = ("text", "value")

    def __init__(self, pos: int, text: str, value: int | float) -> None:
        super().__init__(pos)
        self.text = text
        self.value = value

    def __str__(self) -> str:
        return self.text


class StringNode(Node):
    """A string literal; ``quoted`` is the source form, ``text`` the unquoted value."""

    __slots__ = ("quoted", "text")

    def __init__(self, pos: int, quoted: str, text: str) -> None:
        super().__init__(pos)
        self.quoted = quoted
        self.text = text

    def __str__(self) -> str:
        return self.quoted


class CommandNode(Node):
    """One stage of a pipeline: an operand, or a function/method followed by arguments."""

    __slots__ = ("args",)

    def __init__(self, pos: int, args: list[Node] | None = None) -> None:
        super().__init__(pos)
        self.args: list[Node] = args if args is not None else []

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


class PipeNode(Node):
    """``$x := cmd1 | cmd2``; ``decl`` are the declared (or, with ``is_assign``, assigned) variables."""

    __slots__ = ("cmds", "decl", "is_assign")

    def __init__(
        self,
        pos: int,
        decl: list[VariableNode] | None = None,
        cmds: list[CommandNode] | None = None,
        is_assign: bool = False,
    ) -> None:
        super().__init__(pos)
        self.decl: list[VariableNode] = decl if decl is not None else []
        self.cmds: list[CommandNode] = cmds if cmds is not None else []
        self.is_assign = is_assign

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class ActionNode(Node):
    """``{{pipeline}}``: evaluates and prints (unless it only declares variables)."""

    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: PipeNode) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class BranchNode(Node):
    """Common shape of ``if``, ``range`` and ``with``."""

    __slots__ = ("else_list", "list", "pipe")
    keyword: ClassVar[str] = ""

    def __init__(self, pos: int, pipe: PipeNode, list_: ListNode, else_list: ListNode | None = None) -> None:
        super().__init__(pos)
        self.pipe = pipe
        self.list = list_
        self.else_list = else_list

    def __str__(self) -> str:
        s = "{{" + self.keyword + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


class IfNode(BranchNode):
    """``{{if}}`` (an ``{{else if}}`` is an ``IfNode`` alone in the else list)."""

    __slots__ = ()
    keyword = "if"


class RangeNode(BranchNode):
    """``{{range}}``."""

    __slots__ = ()
    keyword = "range"


class WithNode(BranchNode):
    """``{{with}}``."""

    __slots__ = ()
    keyword = "with"


class BreakNode(Node):
    """``{{break}}``."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{break}}"


class ContinueNode(Node):
    """``{{continue}}``."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{continue}}"


class TemplateNode(Node):
    """``{{template "name" pipeline}}`` (also what ``{{block}}`` leaves in place)."""

    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: PipeNode | None) -> None:
        super().__init__(pos)
        self.name = name
        self.pipe = pipe

    def __str__(self) -> str:
        if self.pipe is None:
            return "{{template " + go_quote(self.name) + "}}"
        return "{{template " + go_quote(self.name) + " " + str(self.pipe) + "}}"

