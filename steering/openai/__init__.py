"""The OpenAI-compatible chat API: protocol (request parsing, response shapes) and
completions (the service that runs a request as a chat turn)."""
