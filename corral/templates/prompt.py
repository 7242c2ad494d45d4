"""Ollama's prompt assembly on top of the Go template interpreter.

This mirrors ``template/template.go`` (``Parse``'s ``{{ .Response }}`` touch-up, ``Execute``, ``collate`` and the
template-facing value types) and the image tagging of ``server/prompt.go`` ``chatPrompt``, so that a model's
``TEMPLATE`` layer renders the same prompt bytes under Corral as under Ollama.  History truncation to fit
``num_ctx`` is the caller's job: render candidate windows with :func:`render_chat` and tokenize them.

Inputs are API-shaped dicts (``/api/chat`` messages and tool definitions).  They are converted to the Go-shaped
values Ollama hands its templates: ``.Messages[].Role/.Content/.Thinking/.Images/.ToolCalls/.ToolName/.ToolCallID``,
``.Tools[].Type/.Function.Name/...``; numbers inside tool arguments and schemas become floats, as Go's
``encoding/json`` decodes them into ``float64``.

Known deliberate difference: Ollama's current ``templateToolFunction`` has no ``String`` method, so
``{{ .Function }}`` (used by the qwen2.5 and deepseek library templates) prints a Go struct dump there; Corral
prints the function's JSON, which is what those templates were written for and what older Ollama printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from corral.templates.gotemplate import (
    NIL_EMPTY,
    OMITEMPTY,
    OMITNIL,
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    GoStruct,
    ListNode,
    Node,
    PipeNode,
    Template,
    go_json,
    go_sprint,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "PropertyType",
    "TemplateArgs",
    "TemplateMessage",
    "TemplateProperties",
    "TemplateTool",
    "TemplateToolCall",
    "TemplateToolCallFunction",
    "TemplateToolFunction",
    "TemplateToolFunctionParameters",
    "TemplateTools",
    "ToolPropertiesMap",
    "ToolProperty",
    "cut_at_response",
    "execute_values",
    "ollama_template",
    "render_chat",
    "render_generate",
]

DEFAULT_TEMPLATE = "{{ .Prompt }}"
"""The template a model without a TEMPLATE layer gets (Ollama's ``template.DefaultTemplate``)."""


# ---------------------------------------------------------------------------------------------------------------
# Template-facing value types (Ollama's templateMessage, templateTool, api.ToolProperty, ...)


_V = TypeVar("_V")


def _json_or(v: Any, default: str) -> str:
    try:
        return go_json(v)
    except ValueError:
        return default


class _GoMap(dict[str, _V]):
    """A Go map a template prints as JSON; a nil map prints ``{}`` but marshals as ``null``."""

    __slots__ = ("nil",)

    def __init__(self, items: Mapping[str, _V] | None = None, *, nil: bool = False) -> None:
        super().__init__(items or {})
        self.nil = nil and not self

    def String(self) -> str:
        return "{}" if self.nil else _json_or(dict(self), "")

    def __go_json__(self) -> Any:
        return None if self.nil else dict(self)


class TemplateArgs(_GoMap[Any]):
    """Tool-call arguments (``templateArgs``): a Go map, so ``range`` and ``json`` see sorted keys; printing it
    (``{{ .Function.Arguments }}``) gives JSON."""

    __slots__ = ()


class TemplateProperties(_GoMap["ToolProperty"]):
    """A tool's parameter properties (``templateProperties``): a Go map printed as JSON."""

    __slots__ = ()


class ToolPropertiesMap(dict[str, "ToolProperty"]):
    """Nested object properties (``*api.ToolPropertiesMap``): JSON keeps insertion order."""

    __slots__ = ()
    _go_ordered = True


class PropertyType(list[str]):
    """A JSON-schema ``type`` (``api.PropertyType``): one name marshals as a string, several as an array."""

    __slots__ = ()

    def String(self) -> str:
        if not self:
            return ""
        if len(self) == 1:
            return self[0]
        return go_sprint([list(self)])

    def __go_json__(self) -> Any:
        return self[0] if len(self) == 1 else list(self)


_TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


class ToolProperty(GoStruct):
    """One parameter schema (``api.ToolProperty``)."""

    __slots__ = ("AnyOf", "Description", "Enum", "Items", "Properties", "Type")
    _fields = ("AnyOf", "Type", "Items", "Description", "Enum", "Properties")
    _json = (
        ("AnyOf", "anyOf", OMITEMPTY),
        ("Type", "type", OMITEMPTY),
        ("Items", "items", OMITNIL),
        ("Description", "description", OMITEMPTY),
        ("Enum", "enum", OMITEMPTY),
        ("Properties", "properties", OMITNIL),
    )
    _go_type = "api.ToolProperty"

    def __init__(
        self,
        AnyOf: list[ToolProperty] | None = None,
        Type: PropertyType | None = None,
        Items: Any = None,
        Description: str = "",
        Enum: list[Any] | None = None,
        Properties: ToolPropertiesMap | None = None,
    ) -> None:
        self.AnyOf = AnyOf if AnyOf is not None else []
        self.Type = Type if Type is not None else PropertyType()
        self.Items = Items
        self.Description = Description
        self.Enum = Enum if Enum is not None else []
        self.Properties = Properties

    def ToTypeScriptType(self) -> str:
        """What Ollama's ``toTypeScriptType`` template function prints for this property."""
        if self.AnyOf:
            return " | ".join(p.ToTypeScriptType() for p in self.AnyOf)
        if not self.Type:
            return "any"
        return " | ".join(_TS_TYPES.get(t, "any") for t in self.Type)


class TemplateToolFunctionParameters(GoStruct):
    """``templateToolFunctionParameters``."""

    __slots__ = ("Defs", "Items", "Properties", "Required", "Type")
    _fields = ("Type", "Defs", "Items", "Required", "Properties")
    _json = (
        ("Type", "type", 0),
        ("Defs", "$defs", OMITNIL),
        ("Items", "items", OMITNIL),
        ("Required", "required", OMITEMPTY),
        ("Properties", "properties", 0),
    )
    _go_type = "template.templateToolFunctionParameters"

    def __init__(
        self,
        Type: str = "",
        Defs: Any = None,
        Items: Any = None,
        Required: list[str] | None = None,
        Properties: TemplateProperties | None = None,
    ) -> None:
        self.Type = Type
        self.Defs = Defs
        self.Items = Items
        self.Required = Required if Required is not None else []
        self.Properties = Properties if Properties is not None else TemplateProperties(nil=True)

    def String(self) -> str:
        return _json_or(self, "")


class TemplateToolFunction(GoStruct):
    """``templateToolFunction``; prints as JSON (see the module docstring)."""

    __slots__ = ("Description", "Name", "Parameters")
    _fields = ("Name", "Description", "Parameters")
    _json = (("Name", "name", 0), ("Description", "description", 0), ("Parameters", "parameters", 0))
    _go_type = "template.templateToolFunction"

    def __init__(
        self,
        Name: str = "",
        Description: str = "",
        Parameters: TemplateToolFunctionParameters | None = None,
    ) -> None:
        self.Name = Name
        self.Description = Description
        self.Parameters = Parameters if Parameters is not None else TemplateToolFunctionParameters()

    def String(self) -> str:
        return _json_or(self, "")


class TemplateTool(GoStruct):
    """``templateTool``: one entry of ``.Tools``."""

    __slots__ = ("Function", "Items", "Type")
    _fields = ("Type", "Items", "Function")
    _json = (("Type", "type", 0), ("Items", "items", OMITNIL), ("Function", "function", 0))
    _go_type = "template.templateTool"

    def __init__(self, Type: str = "", Items: Any = None, Function: TemplateToolFunction | None = None) -> None:
        self.Type = Type
        self.Items = Items
        self.Function = Function if Function is not None else TemplateToolFunction()

    def String(self) -> str:
        return _json_or(self, "")


class TemplateTools(list[TemplateTool]):
    """``.Tools`` (``templateTools``): prints as its JSON; ``nil`` when the request carried no tools (``null``)."""

    __slots__ = ("nil",)

    def __init__(self, items: Iterable[TemplateTool] = (), *, nil: bool = False) -> None:
        super().__init__(items)
        self.nil = nil and not self

    def String(self) -> str:
        return _json_or(self, "")

    def __go_json__(self) -> Any:
        return None if self.nil else list(self)


class TemplateToolCallFunction(GoStruct):
    """``templateToolCallFunction``."""

    __slots__ = ("Arguments", "Index", "Name")
    _fields = ("Index", "Name", "Arguments")
    _go_type = "template.templateToolCallFunction"

    def __init__(self, Index: int = 0, Name: str = "", Arguments: TemplateArgs | None = None) -> None:
        self.Index = Index
        self.Name = Name
        self.Arguments = Arguments if Arguments is not None else TemplateArgs(nil=True)


class TemplateToolCall(GoStruct):
    """``templateToolCall``: one entry of ``.ToolCalls``."""

    __slots__ = ("Function", "ID")
    _fields = ("ID", "Function")
    _go_type = "template.templateToolCall"

    def __init__(self, ID: str = "", Function: TemplateToolCallFunction | None = None) -> None:
        self.ID = ID
        self.Function = Function if Function is not None else TemplateToolCallFunction()


class TemplateMessage(GoStruct):
    """``templateMessage``: one entry of ``.Messages`` (after collation)."""

    __slots__ = ("Content", "Images", "Role", "Thinking", "ToolCallID", "ToolCalls", "ToolName")
    _fields = ("Role", "Content", "Thinking", "Images", "ToolCalls", "ToolName", "ToolCallID")
    _json = (
        ("Role", "Role", 0),
        ("Content", "Content", 0),
        ("Thinking", "Thinking", 0),
        ("Images", "Images", NIL_EMPTY),
        ("ToolCalls", "ToolCalls", NIL_EMPTY),
        ("ToolName", "ToolName", 0),
        ("ToolCallID", "ToolCallID", 0),
    )
    _go_type = "*template.templateMessage"

    def __init__(
        self,
        Role: str = "",
        Content: str = "",
        Thinking: str = "",
        Images: list[Any] | None = None,
        ToolCalls: list[TemplateToolCall] | None = None,
        ToolName: str = "",
        ToolCallID: str = "",
    ) -> None:
        self.Role = Role
        self.Content = Content
        self.Thinking = Thinking
        self.Images = Images if Images is not None else []
        self.ToolCalls = ToolCalls if ToolCalls is not None else []
        self.ToolName = ToolName
        self.ToolCallID = ToolCallID


# ---------------------------------------------------------------------------------------------------------------
# Conversion from API-shaped dicts


def _go_any(v: Any) -> Any:
    """A decoded-JSON value as Go's ``encoding/json`` would hold it in an ``any`` (numbers are float64)."""
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return float(v)
    if isinstance(v, Mapping):
        return {str(k): _go_any(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_go_any(x) for x in v]
    return v


def _str(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else str(v)


def _property(p: Any) -> ToolProperty:
    if not isinstance(p, Mapping):
        return ToolProperty()
    t = p.get("type")
    if isinstance(t, str):
        ptype = PropertyType([t])
    elif isinstance(t, (list, tuple)):
        ptype = PropertyType(str(x) for x in t)
    else:
        ptype = PropertyType()
    any_of = p.get("anyOf")
    enum = p.get("enum")
    props = p.get("properties")
    return ToolProperty(
        AnyOf=[_property(x) for x in any_of] if isinstance(any_of, (list, tuple)) else [],
        Type=ptype,
        Items=_go_any(p.get("items")),
        Description=_str(p.get("description")),
        Enum=[_go_any(x) for x in enum] if isinstance(enum, (list, tuple)) else [],
        Properties=ToolPropertiesMap({str(k): _property(x) for k, x in props.items()})
        if isinstance(props, Mapping)
        else None,
    )


def _tool(t: Any) -> TemplateTool:
    if not isinstance(t, Mapping):
        return TemplateTool()
    fn = t.get("function")
    fn = fn if isinstance(fn, Mapping) else {}
    params = fn.get("parameters")
    params = params if isinstance(params, Mapping) else {}
    props = params.get("properties")
    required = params.get("required")
    return TemplateTool(
        Type=_str(t.get("type")),
        Items=_go_any(t.get("items")),
        Function=TemplateToolFunction(
            Name=_str(fn.get("name")),
            Description=_str(fn.get("description")),
            Parameters=TemplateToolFunctionParameters(
                Type=_str(params.get("type")),
                Defs=_go_any(params.get("$defs")),
                Items=_go_any(params.get("items")),
                Required=[_str(x) for x in required] if isinstance(required, (list, tuple)) else [],
                Properties=TemplateProperties(
                    {str(k): _property(x) for k, x in props.items()} if isinstance(props, Mapping) else None,
                    nil=not isinstance(props, Mapping),
                ),
            ),
        ),
    )


def _tools(tools: Sequence[Any] | None) -> TemplateTools:
    if tools is None:
        return TemplateTools(nil=True)
    return TemplateTools(_tool(t) for t in tools)


def _arguments(a: Any) -> TemplateArgs:
    if isinstance(a, str):
        try:
            a = json.loads(a)
        except ValueError:
            a = None
    if not isinstance(a, Mapping):
        return TemplateArgs(nil=True)
    return TemplateArgs({str(k): _go_any(v) for k, v in a.items()})


def _tool_call(tc: Any) -> TemplateToolCall:
    if not isinstance(tc, Mapping):
        return TemplateToolCall()
    fn = tc.get("function")
    fn = fn if isinstance(fn, Mapping) else {}
    index = fn.get("index")
    return TemplateToolCall(
        ID=_str(tc.get("id")),
        Function=TemplateToolCallFunction(
            Index=index if isinstance(index, int) and not isinstance(index, bool) else 0,
            Name=_str(fn.get("name")),
            Arguments=_arguments(fn.get("arguments")),
        ),
    )


def _message(m: Mapping[str, Any], content: str | None = None) -> TemplateMessage:
    images = m.get("images")
    calls = m.get("tool_calls")
    return TemplateMessage(
        Role=_str(m.get("role")).lower(),
        Content=_str(m.get("content")) if content is None else content,
        Thinking=_str(m.get("thinking")),
        Images=list(images) if isinstance(images, (list, tuple)) else [],
        ToolCalls=[_tool_call(c) for c in calls] if isinstance(calls, (list, tuple)) else [],
        ToolName=_str(m.get("tool_name")),
        ToolCallID=_str(m.get("tool_call_id")),
    )


def _collate(msgs: list[TemplateMessage]) -> tuple[str, list[TemplateMessage]]:
    """Ollama's ``collate``: all system contents joined; consecutive same-role (non-tool) messages merged."""
    system: list[str] = []
    out: list[TemplateMessage] = []
    for m in msgs:
        if m.Role == "system":
            system.append(m.Content)
        if out and out[-1].Role == m.Role and m.Role != "tool":
            prev = out[-1]
            merged = TemplateMessage(
                prev.Role,
                prev.Content + "\n\n" + m.Content,
                prev.Thinking,
                prev.Images,
                prev.ToolCalls,
                prev.ToolName,
                prev.ToolCallID,
            )
            out[-1] = merged
        else:
            out.append(m)
    return "\n\n".join(system), out


# ---------------------------------------------------------------------------------------------------------------
# Template touch-ups


def ollama_template(tmpl: Template) -> Template:
    """The template as Ollama's ``template.Parse`` leaves it: ``{{ .Response }}`` appended when the source uses
    neither ``.Messages`` nor ``.Response`` (so legacy prompt-only templates still end at the response)."""
    cached = tmpl.cache.get("ollama")
    if cached is None:
        if tmpl.references("messages") or tmpl.references("response"):
            cached = tmpl
        else:
            pos = len(tmpl.source)
            response = ActionNode(pos, PipeNode(pos, cmds=[CommandNode(pos, [FieldNode(pos, ("Response",))])]))
            cached = tmpl.with_root(ListNode(tmpl.root.pos, [*tmpl.root.nodes, response]))
        tmpl.cache["ollama"] = cached
    return cached  # type: ignore[no-any-return]


def cut_at_response(tmpl: Template) -> Template:
    """Ollama's legacy cut (``deleteNode``): drop everything after the first ``.Response`` field, walking the
    tree in order (``if``/``range``/``with`` bodies and action arguments; branch conditions are not walked), so
    the final prompt ends where the model's answer begins."""
    cached = tmpl.cache.get("cut")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    cut = False

    def walk(n: Node) -> Node | None:
        nonlocal cut
        if isinstance(n, FieldNode) and "Response" in n.ident:
            cut = True
            return n
        if cut:
            return None
        if isinstance(n, ListNode):
            return ListNode(n.pos, [w for c in n.nodes if (w := walk(c)) is not None])
        if isinstance(n, BranchNode):
            body = walk(n.list)
            assert isinstance(body, ListNode)
            other = walk(n.else_list) if n.else_list is not None else None
            # Ollama panics when the cut falls inside a branch that has an else; dropping the else is the
            # only sensible reading of that template.
            return type(n)(n.pos, n.pipe, body, other if isinstance(other, ListNode) else None)
        if isinstance(n, ActionNode):
            p = walk(n.pipe)
            return ActionNode(n.pos, p) if isinstance(p, PipeNode) else None
        if isinstance(n, PipeNode):
            cmds: list[CommandNode] = []
            for c in n.cmds:
                args = [w for a in c.args if (w := walk(a)) is not None]
                if not args:
                    return None
                cmds.append(CommandNode(c.pos, args))
            return PipeNode(n.pos, n.decl, cmds, n.is_assign) if cmds else None
        return n

    root = walk(tmpl.root)
    cached = tmpl.with_root(root if isinstance(root, ListNode) else ListNode(tmpl.root.pos))
    tmpl.cache["cut"] = cached
    return cached


# ---------------------------------------------------------------------------------------------------------------
# Execution


def _think_values(think: bool | None, think_level: str | None) -> tuple[bool, str, bool]:
    """(``.Think``, ``.ThinkLevel``, ``.IsThinkSet``) as Ollama derives them from the request's ``think``."""
    if think is False:
        return False, "", True
    if think_level is not None:
        return True, think_level, True
    if think is True:
        return True, "medium", True
    return False, "", False


def _execute(
    tmpl: Template,
    msgs: list[TemplateMessage],
    tools: TemplateTools,
    prompt: str,
    suffix: str,
    think: bool,
    level: str,
    think_set: bool,
) -> str:
    t = ollama_template(tmpl)
    system, collated = _collate(msgs)
    if prompt and suffix:
        return t.execute(
            {
                "Prompt": prompt,
                "Suffix": suffix,
                "Response": "",
                "Think": think,
                "ThinkLevel": level,
                "IsThinkSet": think_set,
            }
        )
    if t.references("messages"):
        return t.execute(
            {
                "System": system,
                "Messages": collated,
                "Tools": tools,
                "Response": "",
                "Think": think,
                "ThinkLevel": level,
                "IsThinkSet": think_set,
            }
        )

    # Legacy templates: run once per (system, prompt, response) group; the last group is cut at .Response.
    out: list[str] = []
    sys_ = user = response = ""

    def values() -> dict[str, Any]:
        return {
            "System": sys_,
            "Prompt": user,
            "Response": response,
            "Think": think,
            "ThinkLevel": level,
            "IsThinkSet": think_set,
        }

    for m in collated:
        if m.Role == "system":
            if user or response:
                out.append(t.execute(values()))
                sys_ = user = response = ""
            sys_ = m.Content
        elif m.Role == "user":
            if response:
                out.append(t.execute(values()))
                sys_ = user = response = ""
            user = m.Content
        elif m.Role == "assistant":
            response = m.Content
    out.append(cut_at_response(t).execute(values()))
    return "".join(out)


def execute_values(
    tmpl: Template,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    prompt: str = "",
    suffix: str = "",
    think: bool | None = None,
    think_level: str | None = None,
) -> str:
    """Ollama's ``Template.Execute`` on API-shaped inputs, without ``chatPrompt``'s image tags.

    ``/api/generate`` with a ``template`` override takes this path in Ollama."""
    t, lvl, is_set = _think_values(think, think_level)
    msgs = [_message(m) for m in messages or ()]
    return _execute(tmpl, msgs, _tools(tools), prompt, suffix, t, lvl, is_set)


def render_chat(
    tmpl: Template,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    think: bool | None = None,
    think_level: str | None = None,
    image_tag: Callable[[Any], str] | None = None,
) -> str:
    """The prompt Ollama renders for an ``/api/chat`` request with these (already truncated) messages.

    Images get ``chatPrompt``'s tags: each image of a message adds ``[img-N]`` (N counting from 0 over all
    messages) before its content, or replaces the first literal ``[img]`` placeholder; ``image_tag`` (given the
    image) makes a different tag, where the engine's marker goes later.  ``think=True`` gives ``.ThinkLevel``
    "medium"; a ``think_level`` alone turns thinking on.  Raises ``TemplateError``."""
    t, lvl, is_set = _think_values(think, think_level)
    msgs: list[TemplateMessage] = []
    image_id = 0
    for m in messages:
        images = m.get("images")
        content: str | None = None
        if isinstance(images, (list, tuple)) and images:
            content = _str(m.get("content"))
            prefix = ""
            for image in images:
                tag = f"[img-{image_id}]" if image_tag is None else image_tag(image)
                image_id += 1
                if "[img]" in content:
                    content = content.replace("[img]", tag, 1)
                else:
                    prefix += tag
            content = prefix + content
        msgs.append(_message(m, content))
    return _execute(tmpl, msgs, _tools(tools), "", "", t, lvl, is_set)


def render_generate(
    tmpl: Template,
    *,
    prompt: str,
    system: str = "",
    suffix: str = "",
    think: bool | None = None,
    think_level: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    images: list[Any] | None = None,
    image_tag: Callable[[Any], str] | None = None,
) -> str:
    """The prompt Ollama renders for ``/api/generate`` (not raw, no template override).

    With a ``suffix`` the template runs in fill-in-the-middle mode (``.Prompt``/``.Suffix`` only).  Otherwise
    Ollama builds a chat: ``system`` (the request's, else the model's SYSTEM), the model's MESSAGE layer
    (``messages``; the caller leaves it out when the request carries ``context``), then the prompt as a user
    message with ``images``, rendered with an empty (non-nil) tool list."""
    if suffix:
        t, lvl, is_set = _think_values(think, think_level)
        return _execute(tmpl, [], TemplateTools(nil=True), prompt, suffix, t, lvl, is_set)
    msgs: list[dict[str, Any]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.extend(messages or ())
    user: dict[str, Any] = {"role": "user", "content": prompt}
    if images:
        user["images"] = list(images)
    msgs.append(user)
    return render_chat(tmpl, msgs, tools=[], think=think, think_level=think_level, image_tag=image_tag)
