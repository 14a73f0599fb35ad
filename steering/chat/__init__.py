"""A chat turn and the three doors it is reached by, each only translating its protocol:

- `turn`: `ChatTurn`, the turn itself (resolved by `chat_prepare`: profile, overrides, vector
  set, history fitted to the context; then run, cancelled, logged once), its error codes and
  the user's chat budget, the same behind every door;
- `native`: SteerLab's own protocol, one schema (fields, bounds from the engine's `LIMITS`,
  the turn it asks for, the response) over two doors: /ws/chat/ (`ChatConsumer`) and
  POST /api/chat/ (`ChatView`);
- `openai/`: /v1, OpenAI's chat completions: `protocol` (parsing, response shapes), `views`
  (the door: `Completion`, a request as a turn; the model list) and `urls`.
"""
