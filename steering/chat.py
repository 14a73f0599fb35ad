"""Chat turns, shared by the REST view and the websocket consumer (placeholder until the
inference service lands)."""
