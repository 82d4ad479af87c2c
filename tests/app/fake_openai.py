"""A small OpenAI-compatible HTTP server for tests: /v1/models and /v1/chat/completions, in-process, on a free port.

It answers every chat with `reply` (or refuses it with `chat_status`), records each request (path,
Authorization header, body), and answers 401 when a key is set and a request does not carry it as a bearer token.
It can be slow (`delay_s`) and can die (`die_after` chats, or `kill()`): a dead server stops listening and
drops the connections it had, answering nothing, as a crashed process would.
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"


@dataclass
class FakeOpenAI:
    base_url: str = ""
    api_key: str | None = None
    reply: str = "The answer is 5."
    chat_status: int = 200  # anything else: chats are refused with this status
    requests: list[dict] = field(default_factory=list)
    delay_s: float = 0.0  # each chat answer takes this long
    die_after: int | None = None  # the server dies when this many chats have been answered
    chats: int = 0  # chats taken on (a server that dies while it holds some drops them)
    answered: int = 0  # chats answered
    dead: bool = False
    _stop_listening: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def kill(self) -> None:
        """Die now: drop every connection from here on and stop listening (new connections are refused)."""
        with self._lock:
            already, self.dead = self.dead, True
        if not already and self._stop_listening is not None:
            threading.Thread(target=self._stop_listening, daemon=True).start()  # not from a handler's own thread

    def answer_chat(self) -> bool:
        """Count a chat about to be answered; False when the server is (or now becomes) dead."""
        with self._lock:
            if not self.dead and (self.die_after is None or self.chats < self.die_after):
                self.chats += 1
                return True
        self.kill()
        return False

    def chat_completion(self, body: dict) -> dict:
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model", MODEL),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}}


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: pytest shows what the test asserts
            pass

        def _answer(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self, body: dict) -> bool:
            auth = self.headers.get("Authorization")
            fake.requests.append({"path": self.path, "authorization": auth, "body": body})
            if fake.api_key is None or auth == f"Bearer {fake.api_key}":
                return True
            self._answer(401, {"error": {"message": "invalid API key", "type": "authentication_error"}})
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if fake.dead:
                self.close_connection = True
                return
            if not self._allowed({}):
                return
            if self.path == "/v1/models":
                self._answer(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                               "owned_by": "test"}]})
            else:
                self._answer(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            if not self._allowed(body):
                return
            if self.path == "/v1/chat/completions" and not self._alive():
                return
            if self.path == "/v1/chat/completions" and fake.chat_status != 200:
                self._answer(fake.chat_status, {"error": {"message": "refused", "type": "invalid_request_error"}})
            elif self.path == "/v1/chat/completions" and not body.get("stream"):
                self._answer(200, fake.chat_completion(body))
                with fake._lock:
                    fake.answered += 1
            else:
                self._answer(400, {"error": {"message": f"{self.path} (stream={body.get('stream')}) is not faked"}})

        def _alive(self) -> bool:
            """Answer a chat only from a live server, after its delay; a dead one closes the connection unanswered."""
            alive = fake.answer_chat()
            if alive and fake.delay_s:
                time.sleep(fake.delay_s)  # a slow server, so that a test can kill it while it holds requests
            if not alive or fake.dead:
                self.close_connection = True
                return False
            return True

    return Handler


@contextmanager
def fake_openai_server(api_key: str | None = None, reply: str = "The answer is 5.", delay_s: float = 0.0,
                       die_after: int | None = None):
    """Serve a FakeOpenAI on 127.0.0.1 at a free port for the duration of the block."""
    fake = FakeOpenAI(api_key=api_key, reply=reply, delay_s=delay_s, die_after=die_after)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    fake._stop_listening = lambda: (server.shutdown(), server.server_close())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
