"""A chat turn and the three doors it is reached by, each only translating its protocol:

- `turn`: `ChatTurn`, the turn itself (prepare, run, cancel, log once), its error codes and
  the user's chat budget, the same behind every door;
- `schema`: the chat request shared by REST and the websocket (fields, bounds from the
  engine's `LIMITS`, the turn it asks for);
- `websocket`: /ws/chat/ (`ChatConsumer`);
- `rest`: POST /api/chat/ (`ChatView`);
- `openai/`: /v1, OpenAI's chat completions: `protocol` (parsing, response shapes), `views`
  (the door: `Completion`, a request as a turn; the model list) and `urls`.
"""
