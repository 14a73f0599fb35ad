"""Issue 23's hostile inputs, each sent to a live daphne started as compose.yaml starts it (DEBUG
off, compose's daphne flags, no --proxy-headers), printing for each: the HTTP status, the wall
time, the server's CPU seconds (psutil cpu_times of the daphne process, user + system) and its
peak RSS growth, against the issue's bounds (≤ 50 MiB RSS growth, ≤ 2 s of server CPU) and the
case's own expectation.

    .venv/bin/python bench/hostile.py                 # start a fresh server (own SQLite, temp dir)
    .venv/bin/python bench/hostile.py --only gguf     # the cases whose name contains "gguf"
    .venv/bin/python bench/hostile.py --url http://127.0.0.1:8000 --token TOKEN --pid PID \\
        --user NAME --password PASSWORD               # a server already running

Each case has a deadline (--timeout, default 20 s): a case that runs away is cut off there, and
the server is killed and started again before the next case (a runaway server is also killed at
once when its RSS grows past --guard-mib, default 1500). The server is killed at the end. With
--url, CPU and RSS are read only when --pid names the server's process on this machine, and
nothing is restarted.

The /v1 message-list case needs a ready vector set for the served model, or /v1 refuses every
chat before it reads the messages, and the case would pass for the wrong reason. The bench
registers one before the server starts (the first line of its output says which way):
`--vectors cache` (the default) registers var/bench/hostile-vectors-<model>.safetensors with
`manage.py load_vectors`, computing it first when it is missing (`manage.py compute_vectors
--preference formality` with STEERLAB_RANGE_SEARCH=0: one shipped dimension, no functional-range
search, which none of the cases exercise; minutes, not the quarter of an hour that the default
set's bootstrap took on a loaded machine); `--vectors bootstrap` runs `manage.py bootstrap`
(the default six-dimension set, range search included: slow); `--vectors none` registers none.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.body_limit import send  # noqa: E402
from bench.server import BenchServer  # noqa: E402

MIB = 1024 * 1024
RSS_BOUND_MIB, CPU_BOUND_S = 50, 2.0
PASSWORD = "hostile-bench-passphrase-42"
VECTOR_CACHE = ROOT / "var" / "bench"  # ignored by git

# The case's server: DEBUG off as compose runs it; budgets as production's defaults, except the
# per-address log-in budget (every case here comes from 127.0.0.1, and the per-account cases must
# not be refused by it) and the chat/compute budgets (the cases are not about them).
SERVER_ENV = {
    "DEBUG": "0", "SECRET_KEY": "hostile-bench-" + uuid.uuid4().hex * 2, "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "THROTTLE_LOGIN_ADDRESS": "1000/hour", "THROTTLE_COMPUTE": "1000/hour", "THROTTLE_CHAT": "100000/min",
    # The image's own (Dockerfile): without it one 8 MiB upload grows daphne by ~90 MiB of
    # per-thread malloc arenas, with it ~30 MiB.
    "MALLOC_ARENA_MAX": "2",
}

MAKE_ACCOUNTS = f"""
from django.contrib.auth import get_user_model
User = get_user_model()
for name in ("hostile-xff", "hostile-fullwidth", "hostile-race"):
    user, _ = User.objects.get_or_create(username=name)
    user.set_password({PASSWORD!r})
    user.save()
"""


# -- the server and its measurement ------------------------------------------------------------


class Target:
    """Where the cases go, and the process whose CPU and memory they are charged."""

    def __init__(self, url: str, token: str, pid: int | None, user: str, password: str) -> None:
        self.url, self.token, self.pid, self.user, self.password = url.rstrip("/"), token, pid, user, password
        parsed = urllib.parse.urlsplit(self.url)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.own_set: int | None = None  # a ready set of the served model (run_all finds it)

    def restart(self) -> None:
        """Start the server again after a runaway case (only for a server this script started)."""

    def process(self) -> psutil.Process | None:
        try:
            return psutil.Process(self.pid) if self.pid else None
        except psutil.NoSuchProcess:
            return None


class LocalTarget(Target):
    def __init__(self, server: BenchServer) -> None:
        self.server = server
        super().__init__(server.http_url, server.tokens[0], server.pid, "hostile-xff", PASSWORD)

    def restart(self) -> None:
        process = self.server.process
        if process.poll() is None:
            process.kill()
            process.wait(30)
        self.server.process = subprocess.Popen(process.args, cwd=ROOT, env=self.server.env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.server.pid
        self.server.wait_healthy()


class Meter(threading.Thread):
    """CPU seconds and peak RSS of the server over a case; kills a runaway past `guard_mib`."""

    def __init__(self, process: psutil.Process | None, guard_mib: float) -> None:
        super().__init__(daemon=True)
        self.proc, self.guard, self.running, self.killed = process, guard_mib, True, False
        self.rss0 = self.peak = self._rss()
        self.cpu0 = self._cpu()

    def _rss(self) -> float:
        try:
            return self.proc.memory_info().rss / MIB if self.proc else float("nan")
        except psutil.NoSuchProcess:
            return float("nan")

    def _cpu(self) -> float:
        try:
            times = self.proc.cpu_times() if self.proc else None
        except psutil.NoSuchProcess:
            return float("nan")
        return times.user + times.system if times else float("nan")

    def run(self) -> None:
        while self.running and self.proc:
            rss = self._rss()
            self.peak = max(self.peak, rss)
            if rss - self.rss0 > self.guard and not self.killed:
                self.killed = True
                self.proc.kill()
            time.sleep(0.01)

    def stop(self) -> tuple[float, float]:
        self.running = False
        self.join()
        return self._cpu() - self.cpu0, max(self.peak, self._rss()) - self.rss0


# -- HTTP, including what urllib cannot send ---------------------------------------------------


def http(target: Target, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
         timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(target.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def multipart(fields: dict[str, str], file_name: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def oversized(target: Target, total: int, *, chunked: bool) -> Outcome:
    """POST `total` bytes to /v1 (bench/body_limit.py's sender), stopping when the server answers."""
    line, sent, _ = send(target.port, total, chunked=chunked, host=target.host, path="/v1/chat/completions",
                         headers=f"Authorization: Bearer {target.token}\r\nContent-Type: application/json\r\n")
    parts = line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return Outcome(str(status), status == 413, f"{line}; sent {sent / MIB:.0f} MiB before the answer")


# -- GGUF files --------------------------------------------------------------------------------

UINT8, UINT32, STRING, ARRAY, F32 = 0, 4, 8, 9, 0


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_header(tensors: int, kvs: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, kvs)


def gguf_array_bomb() -> bytes:
    """49 bytes: one metadata ARRAY of UINT8 claiming 2^63 items, at the end of the file."""
    data = gguf_header(0, 1) + gguf_string("a") + struct.pack("<IIQ", ARRAY, UINT8, 2**63)
    assert len(data) == 49
    return data


def gguf_aliased_tensors(count: int = 2000, floats: int = 1_000_000) -> bytes:
    """`count` tensors direction.1…direction.count of `floats` F32 each, all at offset 0 of one
    block of data: 4 MB of file claiming count × 4 MB."""
    kv = gguf_string("general.architecture") + struct.pack("<I", STRING) + gguf_string("controlvector")
    infos = b"".join(gguf_string(f"direction.{n}") + struct.pack("<IQIQ", 1, floats, F32, 0) for n in range(1, count + 1))
    head = gguf_header(count, 1) + kv + infos
    return head + b"\0" * (-len(head) % 32) + b"\0" * (4 * floats)


def gguf_metadata_array(item_type: int, count: int) -> bytes:
    """A metadata array of `count` items: empty strings (8 bytes each) or uint8 (1 byte each)."""
    items = (struct.pack("<Q", 0) * count) if item_type == STRING else bytes(count)
    kv = gguf_string("general.architecture") + struct.pack("<I", STRING) + gguf_string("controlvector")
    return gguf_header(0, 2) + kv + gguf_string("junk") + struct.pack("<IIQ", ARRAY, item_type, count) + items


def gguf_steerlab(model_id: str, hidden: int, layers: int, *, functional_range: float, value: float) -> bytes:
    """A file claiming SteerLab's own format and the served model: its range and values are the
    file's word (range 5.0 against a ceiling of 1.0; values of 1e15)."""
    import numpy as np
    from gguf import GGUFWriter

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.gguf"
        writer = GGUFWriter(str(path), "controlvector")
        writer.add_string("controlvector.model_hint", "llama")
        writer.add_uint32("controlvector.layer_count", layers - 1)
        for key, text in {"steerlab.format": "steerlab-controlvector-1", "steerlab.model_id": model_id,
                          "steerlab.dimension": "hostile", "steerlab.method": "caa", "steerlab.source": "bench",
                          "steerlab.unit": "residual stream"}.items():
            writer.add_string(key, text)
        writer.add_array("steerlab.labels", ["calm", "wild"])
        writer.add_float32("steerlab.strength", 1.0)
        writer.add_float32("steerlab.functional_range", functional_range)
        for layer in range(1, layers):
            writer.add_tensor(f"direction.{layer}", np.full(hidden, value, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


# -- the cases ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str
    expected: bool  # the answer the issue asks for (a 4xx, a refusal), apart from the bounds
    note: str = ""
    cpu_judged: bool = True  # False where the CPU is the budget's own password checks
    note_full: bytes = b""
    after: object = None  # a check of the answer, run once the case's CPU and RSS are read


def import_gguf(target: Target, content: bytes, timeout: float) -> Outcome:
    body, kind = multipart({"name": f"hostile-{uuid.uuid4().hex[:8]}", "dimension": "hostile"}, "x.gguf", content)
    status, answer = http(target, "POST", "/api/vector-sets/import-gguf/", body=body, timeout=timeout,
                          headers={"Authorization": f"Token {target.token}", "Content-Type": kind})
    return Outcome(str(status), 400 <= status < 500, answer[:120].decode(errors="replace"), note_full=answer)


def exported_norms(target: Target, vector_set_id: int, timeout: float) -> dict[int, float]:
    """The norm per block of what a set adds at strength 1, from its GGUF export."""
    import numpy as np
    from gguf import GGUFReader

    status, content = http(target, "GET", f"/api/vector-sets/{vector_set_id}/export.gguf?strength=1", timeout=timeout,
                           headers={"Authorization": f"Token {target.token}"})
    if status != 200:
        raise RuntimeError(f"exporting vector set {vector_set_id}: {status} {content[:120]!r}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.gguf"
        path.write_bytes(content)
        return {int(t.name.split(".")[1]): float(np.linalg.norm(np.asarray(t.data, dtype=np.float64)))
                for t in GGUFReader(path).tensors if t.name.startswith("direction.")}


def import_huge_values(target: Target, content: bytes, timeout: float) -> Outcome:
    """Issue 23 item 4: a SteerLab file's values of 1e15 are accepted (201), but the set adds
    only what this server's residual norms allow at the file's range: per block, about the norm
    of the bench's own set at the same range (0.02). The server measures its norms on other
    prompts than the set's extraction, which differ by under 10 %; 1e15 would be 10^14 times.
    Checked from both sets' GGUF exports after the measured import."""
    outcome = import_gguf(target, content, timeout)
    if outcome.status != "201":
        return Outcome(outcome.status, False, outcome.note)

    def check() -> Outcome:
        imported = exported_norms(target, json.loads(outcome.note_full)["id"], timeout)
        own = exported_norms(target, target.own_set, timeout) if target.own_set else {}
        ratios = [imported[layer] / own[layer] for layer in sorted(set(imported) & set(own))]
        fits = bool(ratios) and all(0.8 < r < 1.25 for r in ratios)
        return Outcome(outcome.status, fits,
                       f"adds ≤ {max(imported.values()):.3g} per block: {min(ratios, default=0):.2f}–"
                       f"{max(ratios, default=0):.2f} × the server's own set on {len(ratios)} shared blocks")

    return Outcome(outcome.status, False, outcome.note, after=check)


def v1_chat(target: Target, body: bytes, timeout: float) -> Outcome:
    status, answer = http(target, "POST", "/v1/chat/completions", body=body, timeout=timeout,
                          headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"})
    shaped = answer.startswith(b"{") and b'"error"' in answer
    # A refusal for want of a vector set says nothing about the input (see --vectors).
    return Outcome(str(status), status == 400 and shaped and b"vector set" not in answer, answer[:120].decode(errors="replace"))


def log_in(target: Target, username: str, password: str, timeout: float, forwarded_for: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}
    return http(target, "POST", "/api/auth/token/", body=json.dumps({"username": username, "password": password}).encode(),
                headers=headers, timeout=timeout)[0]


def spend_until_refused(target: Target, username: str, timeout: float) -> int:
    for n in range(200):
        if log_in(target, username, f"wrong-{n}", timeout) == 429:
            return n
    raise RuntimeError(f"{username}: never refused after 200 wrong passwords")


def case_spoofed_forwarded_for(target: Target, timeout: float, spent: int) -> Outcome:
    statuses = [log_in(target, target.user, target.password, timeout, forwarded_for=f"198.51.100.{n}") for n in range(1, 4)]
    return Outcome(",".join(map(str, statuses)), statuses == [429] * 3,
                   f"refused after {spent} wrong passwords (not measured); then the right one with 3 new X-Forwarded-For values")


def case_fullwidth_name(target: Target, timeout: float, name: str, spent: int) -> Outcome:
    look_alike = chr(ord(name[0]) - ord("a") + 0xFF41) + name[1:]  # fullwidth first letter
    status = log_in(target, look_alike, target.password, timeout)
    return Outcome(str(status), status == 429, f"{look_alike!r} after {name!r} was refused ({spent} wrong passwords, not measured)")


def case_concurrent_wrong_passwords(target: Target, timeout: float, name: str) -> Outcome:
    barrier, statuses, lock = threading.Barrier(24), [], threading.Lock()

    def guess(n):
        barrier.wait()
        status = log_in(target, name, f"wrong-{n}", timeout)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    evaluated = statuses.count(400)
    return Outcome(f"{evaluated}×400,{statuses.count(429)}×429", evaluated <= 10,
                   f"{evaluated} of 24 evaluated (budget 10 per account and address); CPU = their password checks",
                   cpu_judged=False)


def cases(target: Target, model: str, hidden: int, layers: int):
    """(name, function of the timeout) in the order they run: throttles first, while the
    server has not been restarted (a restart forgets the local-memory cache's counters)."""
    deep = ('{"model": "%s", "messages": ' % model + "[" * 980 + "]" * 980 + "}").encode()
    # 2499 empty turns before a question: empty messages count zero characters against the cap.
    empty = json.dumps({"model": model, "max_tokens": 1,
                        "messages": [{"role": "user", "content": ""}] * 2499 + [{"role": "user", "content": "Hi"}]}).encode()
    over = 64 * MIB
    local = isinstance(target, LocalTarget)
    fullwidth, race = ("hostile-fullwidth", "hostile-race") if local else (target.user, target.user)
    return [
        ("throttle: spoofed X-Forwarded-For after a 429",
         lambda t, spent: case_spoofed_forwarded_for(target, t, spent), lambda t: spend_until_refused(target, target.user, t)),
        ("throttle: fullwidth look-alike account name",
         lambda t, spent: case_fullwidth_name(target, t, fullwidth, spent), lambda t: spend_until_refused(target, fullwidth, t)),
        ("throttle: 24 concurrent wrong passwords", lambda t, _: case_concurrent_wrong_passwords(target, t, race), None),
        ("v1: depth-980 nested JSON", lambda t, _: v1_chat(target, deep, t), None),
        ("v1: body over the cap, Content-Length (64 MiB)", lambda t, _: oversized(target, over, chunked=False), None),
        ("v1: body over the cap, chunked (64 MiB)", lambda t, _: oversized(target, over, chunked=True), None),
        ("v1: 2500 empty messages", lambda t, _: v1_chat(target, empty, t), None),
        ("gguf: steerlab file, range 5.0", lambda t, _, content=gguf_steerlab(
            model, hidden, layers, functional_range=5.0, value=0.01): import_gguf(target, content, t), None),
        ("gguf: steerlab file, values 1e15 → server norms", lambda t, _, content=gguf_steerlab(
            model, hidden, layers, functional_range=0.02, value=1e15): import_huge_values(target, content, t), None),
        *[(f"gguf: {name}", lambda t, _, content=content: import_gguf(target, content, t), None) for name, content in [
            ("1 MB, 1M-uint8 metadata array", gguf_metadata_array(UINT8, 1_000_000)),
            ("8 MB, 1M-string metadata array", gguf_metadata_array(STRING, 1_000_000)),
            ("4 MB, 2000 aliased tensors", gguf_aliased_tensors()),
            ("49 bytes, ARRAY count 2^63", gguf_array_bomb()),
        ]],
    ]


def run_case(target: Target, name: str, attack, setup, *, timeout: float, guard_mib: float, last: bool) -> bool:
    """Run `setup` (unmeasured: e.g. spending a budget), then measure `attack`."""
    prepared = _attempt(setup, timeout * 20) if setup else None
    if isinstance(prepared, Outcome):
        print(f"FAIL  {name:<48} setup failed: {prepared.note}", flush=True)
        return False
    meter = Meter(target.process(), guard_mib)
    meter.start()
    result: list = []
    worker = threading.Thread(target=lambda: result.append(_attempt(lambda t: attack(t, prepared), timeout)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout + 5)
    wall = time.monotonic() - started
    time.sleep(0.5)  # what the server still does once the client has its answer
    cpu, growth = meter.stop()
    outcome = result[0] if result else Outcome("TIMEOUT", False, f"no answer within {timeout:.0f} s")
    if outcome.after:
        outcome = _attempt(lambda _: outcome.after(), timeout)
    if meter.killed:
        outcome = Outcome(outcome.status, False, f"server killed: RSS grew past {guard_mib:.0f} MiB; " + outcome.note)
    within = growth <= RSS_BOUND_MIB and (cpu <= CPU_BOUND_S or not outcome.cpu_judged)
    verdict = "PASS" if within and outcome.expected else "FAIL"
    print(f"{verdict}  {name:<48} status {outcome.status:<12} wall {wall:6.2f} s  server CPU {cpu:6.2f} s  "
          f"RSS +{growth:7.1f} MiB  {outcome.note[:130]!r}", flush=True)
    if (outcome.status == "TIMEOUT" or meter.killed or cpu > 5 * CPU_BOUND_S) and not last:
        print("      (server restarted after this case)", flush=True)
        target.restart()
    return verdict == "PASS"


def _attempt(function, timeout: float):
    try:
        return function(timeout)
    except (OSError, RuntimeError, ValueError) as exc:
        return Outcome("TIMEOUT" if isinstance(exc, (socket.timeout, TimeoutError)) else "ERROR", False, repr(exc))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--token", help="with --url: an API token of an ordinary user")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for CPU and RSS")
    parser.add_argument("--user", help="with --url: an account to attack (it gets locked out)")
    parser.add_argument("--password", help="with --url: its password")
    parser.add_argument("--vectors", choices=("cache", "bootstrap", "none"), default="cache",
                        help="how the server gets the ready vector set /v1 needs: load_vectors from a cached file, "
                        "computed once without the range search (default); bootstrap's default set (slow); none")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case (default 20)")
    parser.add_argument("--guard-mib", type=float, default=1500.0, help="kill a server growing past this (MiB)")
    parser.add_argument("--hidden-size", type=int, default=576, help="the served model's hidden size (SmolLM2-135M: 576)")
    parser.add_argument("--layers", type=int, default=30, help="the served model's layer count (SmolLM2-135M: 30)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is killed with us

    print(f"bench/hostile.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  "
          f"{platform.node()}  {os.cpu_count()} CPUs  python {platform.python_version()}")
    print(f"bounds per case: ≤ {RSS_BOUND_MIB} MiB RSS growth, ≤ {CPU_BOUND_S} s server CPU; timeout {args.timeout:.0f} s")
    if args.url:
        target = Target(args.url, args.token, args.pid, args.user, args.password)
        return run_all(target, args)
    with BenchServerForHostile(users=1, env=SERVER_ENV, vectors=args.vectors) as server:
        settings = {k: v for k, v in server.env.items() if k in SERVER_ENV and k != "SECRET_KEY"}
        print(f"server: daphne as compose.yaml runs it, pid {server.pid}, {settings}, other settings default")
        print(f"vector set: {server.vectors_note}")
        return run_all(LocalTarget(server), args)


def run_all(target: Target, args) -> int:
    status, body = http(target, "GET", "/v1/models", headers={"Authorization": f"Bearer {target.token}"}, timeout=30)
    listed = [entry["id"] for entry in json.loads(body)["data"]] if status == 200 else []
    model = listed[0] if listed else "steerlab"
    if len(listed) < 2:
        print("warning: /v1/models lists no ready vector set for the served model; /v1 refuses every chat "
              "before reading its messages, so the message-list case cannot pass (see --vectors)")
    status, body = http(target, "GET", "/api/vector-sets/", headers={"Authorization": f"Token {target.token}"}, timeout=30)
    sets = json.loads(body) if status == 200 else []
    sets = sets.get("results", []) if isinstance(sets, dict) else sets
    target.own_set = next((vs["id"] for vs in sets if vs.get("status") == "ready" and vs.get("model_id") == model), None)
    if target.own_set is not None:
        # The server loads its model and measures its residual norms on first use: a one-time
        # cost of a few CPU seconds that the first GGUF case would otherwise be charged with.
        # So is importing a SteerLab file back (its residual norms): the warm-up does both,
        # then deletes the set it imported.
        auth = {"Authorization": f"Token {target.token}"}
        status, content = http(target, "GET", f"/api/vector-sets/{target.own_set}/export.gguf", headers=auth, timeout=120)
        imported = import_gguf(target, content, timeout=120) if status == 200 else None
        created = json.loads(imported.note_full).get("id") if imported and imported.status == "201" else None
        if created is not None:
            http(target, "DELETE", f"/api/vector-sets/{created}/", headers=auth, timeout=30)
        print(f"warm-up, not measured: export {status}, import back {imported.status if imported else '—'}, "
              f"deleted {created} (the model loaded and its residual norms measured, once per process)")
    selected = [case for case in cases(target, model, args.hidden_size, args.layers) if args.only in case[0]]
    passed = sum(run_case(target, *case, timeout=args.timeout, guard_mib=args.guard_mib, last=n == len(selected) - 1)
                 for n, case in enumerate(selected))
    print(f"{passed} of {len(selected)} cases within the bounds and answered as the issue asks")
    return 0 if passed == len(selected) else 1


class BenchServerForHostile(BenchServer):
    """BenchServer with the accounts the log-in cases attack, and the ready vector set that the
    /v1 message-list case needs, got the way `vectors` says (the module's docstring)."""

    def __init__(self, *, vectors: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vectors, self.vectors_note = vectors, "none registered (--vectors none)"

    def __enter__(self) -> BenchServerForHostile:
        try:
            return super().__enter__()
        except BaseException:
            self.__exit__()  # a server that never became healthy is still killed
            raise

    def wait_healthy(self, timeout: float = 900) -> None:
        super().wait_healthy(timeout)  # the model loads slowly on a shared machine

    def manage(self, *args: str) -> str:
        if args[:1] == ("bootstrap",):
            return self.register_vectors()
        if args[:1] == ("shell",) and "USERS=" in args[-1]:
            args = (*args[:-1], args[-1] + MAKE_ACCOUNTS)
        return super().manage(*args)

    def register_vectors(self) -> str:
        started = time.monotonic()
        if self.vectors == "bootstrap":
            out = super().manage("bootstrap")
            self.vectors_note = f"manage.py bootstrap's default set, range search included ({time.monotonic() - started:.0f} s)"
            return out
        if self.vectors == "none":
            return ""
        model = self.env.get("STEERLAB_MODEL") or "embedded"
        cached = VECTOR_CACHE / f"hostile-vectors-{re.sub(r'[^A-Za-z0-9.-]+', '_', model)}.safetensors"
        if cached.is_file():
            out = super().manage("load_vectors", str(cached), "--name", "hostile bench")
            how = "manage.py load_vectors"
        else:
            VECTOR_CACHE.mkdir(parents=True, exist_ok=True)
            saved_env = self.env
            self.env = {**saved_env, "STEERLAB_RANGE_SEARCH": "0"}
            try:
                out = super().manage("compute_vectors", "--preference", "formality", "--name", "hostile bench",
                                     "--output", str(cached))
            finally:
                self.env = saved_env
            how = "computed by manage.py compute_vectors --preference formality with STEERLAB_RANGE_SEARCH=0, saved to"
        self.vectors_note = (f"{how} {cached.relative_to(ROOT) if cached.is_relative_to(ROOT) else cached} "
                             f"({time.monotonic() - started:.0f} s)")
        return out


if __name__ == "__main__":
    sys.exit(main())
