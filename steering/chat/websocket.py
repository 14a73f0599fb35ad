"""The chat websocket, /ws/chat/ (protocol in docs/api.md). Thin: it validates frames and
relays a ChatTurn's tokens. A bad frame gets an error frame and the socket stays open."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from ops.throttling import too_many_message, user_budget_take
from steering.chat.schema import GenerateFrameSerializer, chat_turn, error_message
from steering.models import InteractionLog
from steering.chat.turn import ChatBudget, ChatError, ChatTurn

log = logging.getLogger(__name__)

MAX_FRAME_CHARS = 64 * 1024
# What daphne is told to accept (--websocket-max-message-size and --websocket-max-frame-size on
# every command line that starts it): the longest frame above at four UTF-8 bytes a character.
# Anything larger is cut off by daphne before it is buffered, not read whole and refused here.
MAX_FRAME_BYTES = 4 * MAX_FRAME_CHARS


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # the browser sees "unauthorised", not a generic drop
            return
        self.user = user
        self.turns: dict[str, tuple[ChatTurn, asyncio.Task]] = {}
        self.open = True
        await self.accept()

    async def disconnect(self, code):
        self.open = False
        turns = getattr(self, "turns", {})
        for turn, _ in turns.values():
            turn.cancel()
        if turns:
            # Let each turn log itself as cancelled; a row is freed within one decode step.
            await asyncio.wait([task for _, task in turns.values()], timeout=10)

    async def send_json(self, frame: dict) -> None:
        if self.open:
            await self.send(text_data=json.dumps(frame))

    async def error(self, code: str, message: str, **extra) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            return await self.error("bad_frame", "Send JSON text frames, not binary ones.")
        if len(text_data) > MAX_FRAME_CHARS:
            return await self.error("bad_frame", f"Frames are limited to {MAX_FRAME_CHARS} characters.")
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):
            return await self.error("bad_json", "The frame is not valid JSON.")
        if not isinstance(message, dict):
            return await self.error("bad_frame", 'A frame is a JSON object with a "type".')
        kind = message.get("type")
        if kind == "generate":
            await self.generate(message)
        elif kind == "cancel":
            await self.cancel(message.get("request_id"))
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.error("unknown_type", f"Unknown frame type {str(kind)[:40]!r}; use generate, cancel or ping.")

    async def generate(self, message: dict) -> None:
        form = GenerateFrameSerializer(data=message)
        if not form.is_valid():
            return await self.error("invalid", error_message(form.errors), tag=str(message.get("tag", ""))[:40])
        data = form.validated_data
        # The same budget as REST chat, spent before anything is logged or queued.
        wait = await sync_to_async(user_budget_take)(scope=ChatBudget.throttle_scope, user=self.user)
        if wait:
            return await self.error("too_many", too_many_message(wait, "requests"), retry_after=wait, tag=data["tag"])
        if len(self.turns) >= settings.STEERLAB_MAX_PER_USER:
            # Every refusal says when to try again, as the scheduler's own per-user one does.
            return await self.error(
                "too_many", "Generations are already running on this socket; wait or cancel one.", retry_after=1,
                tag=data["tag"],
            )
        turn = chat_turn(data, user=self.user, source=InteractionLog.Source.WEBSOCKET)
        request_id = uuid.uuid4().hex[:12]
        task = asyncio.ensure_future(self.run(request_id, data["tag"], turn))
        self.turns[request_id] = (turn, task)
        task.add_done_callback(lambda _: self.turns.pop(request_id, None))

    async def run(self, request_id: str, tag: str, turn: ChatTurn) -> None:
        ids = {"request_id": request_id, "tag": tag}
        try:
            await turn.prepare()
            await self.send_json({"type": "start", **ids, **turn.applied})
            async for text in turn.run():
                await self.send_json({"type": "token", **ids, "text": text})
            result = await turn.finish()
        except ChatError as exc:  # the turn has logged itself, unless it was refused
            await self.error(exc.code, exc.message, retry_after=exc.retry_after, **ids)
        except Exception:
            # Whatever went wrong, the client hears of it: a turn never ends in silence.
            log.exception("Chat turn %s failed", request_id)
            await self.error("internal", "Something went wrong on the server; it has been logged.", **ids)
        else:
            stats = {
                k: result[k]
                for k in ("tokens", "latency_ms", "first_token_ms", "finish_reason", "interaction_id", "conditions")
            }
            await self.send_json({"type": "done", **ids, "text": result["generated_text"], "stats": stats,
                                  "preferences_applied": result["preferences_applied"], "readout": result["readout"]})

    async def cancel(self, request_id) -> None:
        if request_id is not None and not isinstance(request_id, str):
            # Checked first: an unhashable id (a list, an object) would crash the lookup below.
            return await self.error("invalid", "request_id must be a string.")
        if request_id is not None and request_id not in self.turns:
            return await self.error("not_found", f"No running generation {str(request_id)[:40]!r}.")
        for key, (turn, _) in self.turns.items():
            if request_id is None or key == request_id:
                turn.cancel()
