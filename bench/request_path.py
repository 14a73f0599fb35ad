"""The files of this repository a steered chat request crosses, from each door to the hook.

For each door (the websocket /ws/chat/, POST /api/chat/, POST /v1/chat/completions) one steered
request is sent in-process to the real ASGI application / views, on a tiny random Llama (no
download, seconds on a CPU); a second one is traced: every Python function called in any
thread from the door's handler (`ChatConsumer.receive`, `ChatView.post`,
`ChatCompletionsView.post`) until `SteeringHooks`' hook adds that request's delta. The count is
the distinct source files of the repository among them (Django, DRF, torch not counted). The
first request is not traced, so one-off work (loading the model and the vector file) is left
out: what is counted is what every request goes through.

    OMP_NUM_THREADS=1 .venv/bin/python bench/request_path.py [--files]

Profiling costs every call of the process, so the numbers are files, never times.
"""

from __future__ import annotations

import argparse
import asyncio
import dis
import functools
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

DOORS = {
    "websocket": ("steering/chat/native.py", "receive"),
    "rest": ("steering/chat/native.py", "post"),
    "v1": ("steering/chat/openai/views.py", "post"),
}
PROMPT = "Give me one tip for a weekend trip."


@functools.lru_cache(maxsize=None)
def _first_resume(code) -> int:
    """Where a function starts running: a "call" event past it resumes a suspended frame."""
    return next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), 0)


class PathRecorder:
    """A profile function for every thread: the repository files called between a door's
    handler and the first steered hook call."""

    def __init__(self) -> None:
        self.door: tuple[str, str] | None = None  # (file, function) that starts the recording
        self.recording = False
        self.files: dict[str, str] = {}  # file → the first call into it, and from where
        self.prefix = str(ROOT) + os.sep
        self.skipped = tuple(str(ROOT / name) for name in (".venv", "bench", "tests"))

    def __call__(self, frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        filename = code.co_filename
        if not filename.startswith(self.prefix) or filename.startswith(self.skipped):
            return
        if frame.f_lasti > _first_resume(code):
            return  # a coroutine or generator resumed (the ASGI stack around an await), not a call
        relative = filename[len(self.prefix):]
        if not self.recording:
            if self.door == (relative, code.co_name):
                self.recording = True
                self.files[relative] = code.co_name
            return
        if relative not in self.files:
            caller = frame.f_back
            origin = caller.f_code.co_filename.removeprefix(self.prefix) if caller else "?"
            self.files[relative] = f"{code.co_name} (from {origin}:{caller.f_code.co_name if caller else '?'})"
        if relative == "steering/engine/hooks.py" and code.co_name == "hook":
            from steering.engine.hooks import _active

            active = _active.get()
            if active is not None and active[1] is not None and active[1].deltas:
                self.recording, self.door = False, None

    def trace(self, door: str) -> None:
        self.files, self.recording, self.door = {}, False, DOORS[door]

    def result(self) -> dict[str, str]:
        if self.door is not None or self.recording:
            raise RuntimeError("The traced request never reached a steered hook call")
        return dict(sorted(self.files.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", action="store_true", help="list each door's files too")
    args = parser.parse_args()

    recorder = PathRecorder()
    threading.setprofile(recorder)
    sys.setprofile(recorder)

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    work = Path(tempfile.mkdtemp(prefix="request-path-"))
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        from tests.tiny_models import CORPUS, build_tiny

        tiny = build_tiny("llama")
        tiny.model.save_pretrained(work / "tiny")
        tiny.tokenizer.save_pretrained(work / "tiny")
        settings.STEERLAB_MODEL, settings.STEERLAB_DEVICE = str(work / "tiny"), "cpu"
        settings.MEDIA_ROOT = work / "media"
        counts = run_doors(recorder, CORPUS)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        connection.creation.destroy_test_db(old_name, verbosity=0)
    for door, files in counts.items():
        print(f"{door:10s} {len(files):3d} files")
        if args.files:
            for name, first in files.items():
                print(f"    {name:40s} {first}")


def run_doors(recorder: PathRecorder, corpus) -> dict[str, dict[str, str]]:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from steering.engine import compute_vectors
    from steering.models import PreferenceDimension, site_model_id
    from steering.serving import runtime
    from steering.services import vector_sets

    vectors = compute_vectors(runtime.site_model(), {"formality": (corpus[0::2], corpus[1::2])},
                              labels={"formality": ["Casual", "Formal"]})
    PreferenceDimension.objects.create(name="formality", negative_label="Casual", positive_label="Formal")
    vector_sets.vector_set_register(vectors=vectors, name="default")
    user = get_user_model().objects.create_user("alice", "alice@example.org", "correct horse battery staple")
    steering = {"formality": 0.8}

    rest = APIClient()
    rest.force_authenticate(user)

    def rest_chat():
        response = rest.post("/api/chat/", {"prompt": PROMPT, "preferences": steering, "max_new_tokens": 3},
                             format="json")
        assert response.status_code == 200, response.content

    v1 = APIClient()
    v1.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=user).key}")

    def v1_chat():
        response = v1.post("/v1/chat/completions", {
            "model": site_model_id(), "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3,
            "steering": {"preferences": steering},
        }, format="json")
        assert response.status_code == 200, response.content

    def websocket_chat():
        asyncio.run(_websocket_chat(user, steering))

    counts = {}
    for door, send in (("websocket", websocket_chat), ("rest", rest_chat), ("v1", v1_chat)):
        send()  # warm: the vector file is loaded, the scheduler started
        recorder.trace(door)
        send()
        counts[door] = recorder.result()
    return counts


async def _websocket_chat(user, steering) -> None:
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.test import Client

    from steerlab_site.asgi import application

    def cookie() -> bytes:
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", await sync_to_async(cookie)())]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=30)
    assert connected
    await communicator.send_json_to({"type": "generate", "prompt": PROMPT, "preferences": steering, "max_new_tokens": 3})
    while True:
        frame = await communicator.receive_json_from(timeout=120)
        assert frame["type"] != "error", frame
        if frame["type"] == "done":
            break
    await communicator.disconnect()


if __name__ == "__main__":
    main()
