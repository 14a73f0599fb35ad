"""/v1: the OpenAI-compatible chat API. protocol (request parsing, response shapes), views (the
door: a request run as a chat turn, and the model list) and urls."""
