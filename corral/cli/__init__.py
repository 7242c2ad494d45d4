"""The ``corral`` command line: an HTTP client of the Corral server with Ollama's commands and output."""
