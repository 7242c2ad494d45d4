"""The interactive chat of ``corral run MODEL`` (Ollama's ``generateInteractive``).

:class:`Session` holds the conversation and interprets each input line (``\"\"\"`` multi-line input, slash commands);
:meth:`Session.loop` reads lines with prompt_toolkit. Line handling is separate from reading so every command can
be tested without a terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import Enum
from typing import Any, TextIO

from corral import config
from corral.cli.client import Client, ClientError
from corral.cli.params import format_params, go_quote
from corral.cli.turn import RunOptions, chat, load_model, user_message
from corral.cli.views import go_value, show_info
from corral.errors import ParamError

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
USAGE_MULTIMODAL = "Use /path/to/file to include .jpg, .png, .gif or .bmp images.\n"

USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking

"""

USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + g            Open the message in an editor
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit corral (/bye)

"""

USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template

"""

USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters

"""

PROMPT, ALT_PROMPT = ">>> ", "... "
PLACEHOLDER, ALT_PLACEHOLDER = "Send a message (/? for help)", 'Use """ to end multi-line input'


class Multiline(Enum):
    NONE = 0
    PROMPT = 1
    SYSTEM = 2


class Exit(Exception):
    """Raised by a line handler to leave the session (``/bye``)."""


ChatFn = Callable[[Client, RunOptions], "dict[str, Any] | None"]


def _default_chat(client: Client, opts: RunOptions) -> dict[str, Any] | None:
    return chat(client, opts, interactive=True)


class Session:
    """One chat: the options being edited and the messages so far."""

    def __init__(
        self,
        client: Client,
        opts: RunOptions,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        chat_fn: ChatFn | None = None,
    ) -> None:
        self.client = client
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.chat_fn = chat_fn or _default_chat
        self.multiline = Multiline.NONE
        self.buffer = ""
        self.history_enabled = not config.env_bool("NOHISTORY")

    # -- output helpers -------------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @property
    def use_alt_prompt(self) -> bool:
        return self.multiline is not Multiline.NONE

    # -- line handling --------------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Ctrl-C at the prompt: drop any half-typed multi-line input."""
        self.multiline = Multiline.NONE
        self.buffer = ""

    def handle(self, line: str) -> None:
        """Interpret one input line; raises :class:`Exit` to leave. Mirrors Ollama's order of checks, which
        match commands by prefix."""
        if self.multiline is not Multiline.NONE:
            before, ended = (line[:-3], True) if line.endswith('"""') else (line, False)
            self.buffer += before
            if not ended:
                self.buffer += "\n"
                return
            if self.multiline is Multiline.SYSTEM:
                self.opts.system = self.buffer
                self.opts.messages.append({"role": "system", "content": self.opts.system})
                self.say("Set system message.")
                self.buffer = ""
            self.multiline = Multiline.NONE
        elif line.startswith('"""'):
            rest = line[3:]
            if rest.endswith('"""') and len(rest) >= 3:
                self.buffer += rest[:-3]
            else:
                self.buffer += rest + "\n"
                self.multiline = Multiline.PROMPT
        elif line.startswith("/list"):
            self._list(line.split()[1:])
            return
        elif line.startswith("/load"):
            self._load(line.split())
            return
        elif line.startswith("/save"):
            self._save(line.split())
            return
        elif line.startswith("/clear"):
            self.opts.messages = []
            if self.opts.system:
                self.opts.messages.append({"role": "system", "content": self.opts.system})
            self.say("Cleared session context")
            return
        elif line.startswith("/set"):
            self._set(line)
            return
        elif line.startswith("/show"):
            self._show(line.split())
            return
        elif line.startswith(("/help", "/?")):
            self._help(line.split())
            return
        elif line.startswith(("/exit", "/bye")):
            raise Exit
        elif line.startswith("/"):
            first = line.split()[0]
            if not (self.opts.multimodal and self._is_file(first)):
                self.say(f"Unknown command '{first}'. Type /? for help")
                return
            self.buffer += line
        else:
            self.buffer += line

        if self.buffer and self.multiline is Multiline.NONE:
            text, self.buffer = self.buffer, ""
            self._send(text)

    def _send(self, text: str) -> None:
        try:
            message = user_message(self.opts, text)
        except ClientError as exc:
            self.err.write(f"Error: {exc.message}\n")
            return
        self.opts.messages.append(message)
        try:
            reply = self.chat_fn(self.client, self.opts)
        except ClientError:
            self.opts.messages.pop()  # a failed turn leaves no dangling question in the history
            raise
        if reply is not None:
            self.opts.messages.append(reply)

    @staticmethod
    def _is_file(word: str) -> bool:
        return os.path.isfile(word.replace("\\ ", " "))

    # -- commands --------------------------------------------------------------------------------------------

    def _list(self, args: list[str]) -> None:
        from corral.cli.views import list_table

        try:
            models = self.client.list().get("models") or []
        except ClientError as exc:
            self.err.write(f"Error: {exc.message}\n")
            return
        self.out.write(list_table(models, args[0] if args else None))

    def _load(self, args: list[str]) -> None:
        if len(args) != 2:
            self.say("Usage:\n  /load <modelname>")
            return
        previous = (self.opts.model, self.opts.messages)
        self.opts.model, self.opts.messages = args[1], []
        self.say(f"Loading model '{self.opts.model}'")
        try:
            load_model(self.client, self.opts)
        except ClientError as exc:
            self.err.write(f"Error: {exc.message}\n")
            self.opts.model, self.opts.messages = previous

    def _save(self, args: list[str]) -> None:
        if len(args) != 2:
            self.say("Usage:\n  /save <modelname>")
            return
        body: dict[str, Any] = {"model": args[1], "from": self.opts.parent_model or self.opts.model}
        if self.opts.system:
            body["system"] = self.opts.system
        if self.opts.options:
            body["parameters"] = dict(self.opts.options)
        if self.opts.messages:
            body["messages"] = list(self.opts.messages)
        try:
            for _ in self.client.create(body):
                pass
        except ClientError as exc:
            if "invalid model name" in exc.message:
                self.say(f"error: The model name '{args[1]}' is invalid")
            else:
                self.say(f"error: {exc.message}")
            return
        self.say(f"Created new model '{args[1]}'")

    def _set(self, line: str) -> None:
        args = line.split()
        if len(args) < 2:
            self.err.write(USAGE_SET)
            return
        what = args[1]
        if what == "history":
            self.history_enabled = True
        elif what == "nohistory":
            self.history_enabled = False
        elif what in ("wordwrap", "nowordwrap"):
            self.opts.word_wrap = what == "wordwrap"
            self.say(f"Set '{what}' mode.")
        elif what in ("verbose", "quiet"):
            self.opts.verbose = what == "verbose"
            self.say(f"Set '{what}' mode.")
        elif what == "think":
            level = args[2] if len(args) > 2 else ""
            self.opts.think = level or True
            self.opts.think_explicit = True
            self._warn_if_no_thinking()
            self.say(f"Set 'think' mode to '{level}'." if level else "Set 'think' mode.")
        elif what == "nothink":
            self.opts.think = False
            self.opts.think_explicit = True
            self._warn_if_no_thinking()
            self.say("Set 'nothink' mode.")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                self.say("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                self.opts.format = args[2]
                self.say(f"Set format to '{args[2]}' mode.")
        elif what == "noformat":
            self.opts.format = ""
            self.say("Disabled format.")
        elif what == "parameter":
            if len(args) < 4:
                self.err.write(USAGE_PARAMETERS)
                return
            name, values = args[2], args[3:]
            try:
                typed = format_params({name: values})
            except ParamError as exc:
                self.say(f"Couldn't set parameter: {go_quote(str(exc))}")
                return
            self.say(f"Set parameter '{name}' to '{', '.join(values)}'")
            self.opts.options[name] = typed[name]
        elif what == "system":
            self._set_system(args)
        else:
            self.say(f"Unknown command '/set {what}'. Type /? for help")

    def _set_system(self, args: list[str]) -> None:
        if len(args) < 3:
            self.err.write(USAGE_SET)
            return
        text = " ".join(args[2:])
        if text.startswith('"""'):
            text = text[3:]
            if text.endswith('"""') and len(text) >= 3:
                text = text[:-3]
            else:
                self.multiline = Multiline.SYSTEM
                self.buffer = text + "\n"
                return
        self.opts.system = text
        message = {"role": "system", "content": text}
        if self.opts.messages and self.opts.messages[-1].get("role") == "system":
            self.opts.messages[-1] = message
        else:
            self.opts.messages.append(message)
        self.say("Set system message.")

    def _warn_if_no_thinking(self) -> None:
        try:
            info = self.client.show(self.opts.model)
        except ClientError:
            return
        if "thinking" not in (info.get("capabilities") or []):
            self.err.write(f"warning: model {go_quote(self.opts.model)} does not support thinking output\n")

    def _show(self, args: list[str]) -> None:
        if len(args) < 2:
            self.err.write(USAGE_SHOW)
            return
        try:
            resp = self.client.show(self.opts.model, system=self.opts.system or None, options=self.opts.options)
        except ClientError as exc:
            self.say("error: couldn't get model")
            self.err.write(f"Error: {exc.message}\n")
            return
        what = args[1]
        if what == "info":
            self.err.write(show_info(resp))
        elif what == "license":
            self.say(str(resp.get("license") or "") or "No license was specified for this model.")
        elif what == "modelfile":
            self.say(str(resp.get("modelfile") or ""))
        elif what == "parameters":
            if self.opts.options:
                self.say("User defined parameters:")
                for key, value in self.opts.options.items():
                    self.say(f"{key:<30} {go_value(value)}")
                self.say()
            if resp.get("parameters"):
                self.say("Model defined parameters:")
                self.say(str(resp["parameters"]))
            elif not self.opts.options:
                self.say("No parameters were specified for this model.")
        elif what == "system":
            system = self.opts.system or str(resp.get("system") or "")
            self.say(system + "\n" if system else "No system message was specified for this model.")
        elif what == "template":
            self.say(str(resp.get("template") or "") or "No prompt template was specified for this model.")
        else:
            self.say(f"Unknown command '/show {what}'. Type /? for help")

    def _help(self, args: list[str]) -> None:
        if len(args) > 1:
            topic = args[1]
            if topic in ("set", "/set"):
                self.err.write(USAGE_SET)
            elif topic in ("show", "/show"):
                self.err.write(USAGE_SHOW)
            elif topic in ("shortcut", "shortcuts"):
                self.err.write(USAGE_SHORTCUTS)
            return
        self.err.write(USAGE + (USAGE_MULTIMODAL if self.opts.multimodal else "") + "\n")

    # -- the terminal loop -----------------------------------------------------------------------------------

    def loop(self) -> None:
        """Read lines until ``/bye`` or Ctrl-D; Ctrl-C clears the line (or, on an empty line, says how to leave)."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.application import get_app
        from prompt_toolkit.formatted_text import FormattedText
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        session_ref = self

        class _History(FileHistory):
            """File history that stops recording while ``/set nohistory`` is in effect."""

            def store_string(self, string: str) -> None:
                if session_ref.history_enabled:
                    super().store_string(string)

        history: Any
        if self.history_enabled:
            path = config.home() / "history"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                history = _History(str(path))
            except OSError:
                history = InMemoryHistory()
        else:
            history = InMemoryHistory()

        interrupted_text: list[str] = []
        bindings = KeyBindings()

        @bindings.add("c-c")
        def _ctrl_c(event: Any) -> None:
            interrupted_text.append(event.app.current_buffer.text)
            event.app.exit(exception=KeyboardInterrupt())

        @bindings.add("c-g")
        def _editor(event: Any) -> None:
            editor = config.env("EDITOR")
            if editor:
                os.environ["VISUAL"] = editor
            event.app.current_buffer.open_in_editor()

        # prompt_toolkit turns on bracketed paste, so a pasted block arrives as one message
        prompt: Any = PromptSession(history=history, key_bindings=bindings, enable_history_search=False)
        while True:
            alt = self.use_alt_prompt
            hint = FormattedText([("fg:ansibrightblack", ALT_PLACEHOLDER if alt else PLACEHOLDER)])

            def placeholder(hint: FormattedText = hint) -> FormattedText:
                # shown while the line is empty, but not left behind once the line is entered
                return FormattedText([]) if get_app().is_done else hint

            try:
                line = prompt.prompt(ALT_PROMPT if alt else PROMPT, placeholder=placeholder)
            except KeyboardInterrupt:
                if not (interrupted_text and interrupted_text[-1]) and not alt:
                    self.say("Use Ctrl + d or /bye to exit.")
                interrupted_text.clear()
                self.interrupt()
                continue
            except EOFError:
                return
            try:
                self.handle(line)
            except Exit:
                return
            except ClientError as exc:
                self.err.write(f"Error: {exc.message}\n")
