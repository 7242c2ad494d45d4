"""How a template fails: the one exception type, and the limits past which parsing or execution fails with it."""

from __future__ import annotations

from corral.errors import TemplateError  # one error tree: corral/errors.py

__all__ = ["MAX_DEPTH", "MAX_ITERATIONS", "MAX_OUTPUT", "TemplateError"]

MAX_OUTPUT = 16 * 1024 * 1024
"""Most characters one execution may write; a template that loops its way past this fails instead of eating RAM."""
MAX_DEPTH = 100
"""Deepest nesting of control structures, parentheses and ``{{template}}`` calls."""
MAX_ITERATIONS = 1_000_000
"""Most ``range`` iterations plus ``{{template}}`` calls in one execution (bounds ``{{range 1000000000}}``)."""

