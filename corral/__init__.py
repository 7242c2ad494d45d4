"""Corral: a local LLM runtime, wire- and store-compatible with Ollama."""

__version__ = "0.1.0"
