"""/v1: the OpenAI-compatible chat API. protocol (request parsing, response shapes),
completions (a request run as a chat turn), views and urls (the door itself)."""
