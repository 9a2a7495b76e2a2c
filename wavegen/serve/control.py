"""Live label control: ``POST /label`` switches a conditioned model's label or blend while it plays.

Off unless the server was started with an operator token (``--control-token`` or
``--control-token-file``), so a public stream cannot be steered by its listeners; every request
carries the token (``Authorization: Bearer TOKEN``). The body is the label text as ``--label``
takes it ("bells", "rain:0.7,bells:0.3"), as plain text or JSON ``{"label": ...}``.

The switch takes effect at the next block the station renders: the station thread takes it
between two guard windows and writes the new blend into the engine's state (``label_weights``
of :meth:`~wavegen.engine.Engine.state_dict`), so the RNN state carries on and only the
conditioning changes. Everything before that sample is what it would have been without the
switch. The answer says where it starts (``starts_at_sample``) and when listeners at the live
edge hear it (``on_air_in_seconds``). With ``--archive`` a snapshot is taken at the switch, and
snapshots record the label in force, so a restart continues with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import threading

import numpy as np

from wavegen.render import parse_label
from wavegen.render.settings import labels_said
from wavegen.serve.archive import ServeError

logger = logging.getLogger(__name__)

TOKEN_MIN_CHARS = 8
LABEL_MAX_CHARS = 1000
TOKEN_FILE_MAX_BYTES = 4096  # of a --control-token-file read: its first line is all there is to read
LABEL_WAIT_SECONDS = 10.0  # the answer waits this long for the station to take the switch (202 after)


def check_token(token: str | None, where: str = "--control-token") -> None:
    """ServeError unless ``token`` is None or can be an operator token (sent in an HTTP header)."""
    if token is None:
        return
    if len(token) < TOKEN_MIN_CHARS or not all(33 <= ord(c) < 127 for c in token):
        raise ServeError(f"{where}: a token needs at least {TOKEN_MIN_CHARS} characters, printable ASCII without "
                         "spaces (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())')")


def read_token_file(path: str) -> str:
    """The token in ``path``: its first line, without the line end, spaces around it or a UTF-8 byte order mark
    (an editor's); ServeError naming the file. A first line of at most TOKEN_FILE_MAX_BYTES is read: a file named by
    mistake (a model, /dev/zero) is refused, not read whole. A pipe (``<(pass show token)``) is read too."""
    where = f"--control-token-file {path}"
    try:
        with open(path, "rb") as f:
            head = f.read(TOKEN_FILE_MAX_BYTES + 1)  # a line of the most bytes is followed by its line end, or by none
    except OSError as err:
        raise ServeError(f"{where}: cannot read it: {err.strerror or err}") from None
    lines = head.splitlines()
    if lines and len(lines[0]) > TOKEN_FILE_MAX_BYTES:
        raise ServeError(f"{where}: its first line is longer than {TOKEN_FILE_MAX_BYTES} bytes: not a token file")
    try:
        token = (lines[0] if lines else b"").decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError as err:
        raise ServeError(f"{where}: its first line is not UTF-8 text ({err.reason} at byte {err.start}): not a "
                         "token file") from None
    if not token and any(line.strip() for line in lines):
        raise ServeError(f"{where}: its first line is empty; the token is read from the first line")
    check_token(token, where)
    return token


class LabelState:
    """The label in force and the switch asked for; shared by the web server and the station's thread.

    ``request(text)`` (any thread) → a Future the station resolves when it takes the switch;
    ``take()`` (the station) → (text, weights, futures) or None."""

    def __init__(self, labels: list[str], text: str | None, weights: np.ndarray | None, wake=None):
        self.labels = list(labels)
        self.text, self.weights = text, weights
        self.since = 0  # the sample the label in force started at
        self.switches = 0
        self._wake = wake or (lambda: None)
        self._lock = threading.Lock()
        self._pending: tuple[str, np.ndarray] | None = None
        self._futures: list[concurrent.futures.Future] = []
        self._closed: str | None = None  # why no switch can be taken any more (the station stopped)

    def parse(self, text: str, max_chars: int | None = LABEL_MAX_CHARS) -> np.ndarray:
        """The blend ``text`` asks for; ValueError naming it and this model's labels. ``max_chars``: the longest
        text a switch asked for may be (None: any, as --label takes it)."""
        if not self.labels:
            raise ValueError("this model is not conditioned on labels: there is no label to switch")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"no label given; this model's labels: {labels_said(self.labels)}")
        if max_chars is not None and len(text) > max_chars:
            raise ValueError(f"a label of {len(text)} characters: at most {max_chars}")
        try:
            return parse_label(text, self.labels)
        except ValueError as err:
            why = str(err).replace("--label ", "label ", 1)
            known = "" if "this model's labels" in why else f"; this model's labels: {labels_said(self.labels)}"
            raise ValueError(why + known) from None

    def request(self, text: str) -> concurrent.futures.Future:
        """Ask for ``text`` from the next block on (a later request before then replaces it)."""
        weights = self.parse(text)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed is not None:  # nothing would take it: asked while the server closes
                raise ServeError(self._closed)
            self._pending = (text, weights)
            self._futures.append(future)
        self._wake()
        return future

    def take(self) -> tuple[str, np.ndarray, list[concurrent.futures.Future]] | None:
        with self._lock:
            if self._pending is None:
                return None
            (text, weights), futures = self._pending, self._futures
            self._pending, self._futures = None, []
        return text, weights, futures

    def fail_pending(self, why: str) -> None:
        """The station has stopped: the switches asked for, and any asked for from now on, fail with ``why``."""
        with self._lock:
            futures, self._pending, self._futures, self._closed = self._futures, None, [], why
        for future in futures:
            if not future.done():
                future.set_exception(ServeError(why))

    def switched(self, text: str, weights: np.ndarray, position: int) -> None:
        self.text, self.weights, self.since = text, weights, position
        self.switches += 1

    def apply_pending(self, engine, position: int, sample_rate: int, snapshot=None) -> bool:
        """The station's thread, between two windows: give ``engine`` the blend asked for from ``position``
        on, then ``snapshot()`` (the archive's, recording it), and answer the requests. → whether the label
        switched: False where none was asked for, or where the one asked for is the blend in force (answered
        "changed": false, it switches nothing, so it holds no window's switch)."""
        taken = self.take()
        if taken is None:
            return False
        text, weights, futures = taken
        before = self.text
        changed = not np.array_equal(weights, self.weights)
        try:
            if changed:
                apply_label(engine, weights)
                self.switched(text, weights, position)
                if snapshot is not None:
                    snapshot()
                logger.info("label %r from %.3f s (sample %d) on, was %r", text, position / sample_rate, position,
                            before)
        except BaseException as err:
            for future in futures:
                future.set_exception(ServeError(f"the label switch failed: {err}"))
            raise
        result = {"label": self.text, "previous": before, "changed": changed, "starts_at_sample": position,
                  "starts_at_seconds": position / sample_rate}
        for future in futures:
            future.set_result(result)
        return changed

    @property
    def single(self) -> str | None:
        """The one label in force, named as the model's labels name it, where the blend in force is all of one
        label (its text may say it otherwise: "bells:1"); None for a blend of several, or none."""
        hits = [] if self.weights is None else np.flatnonzero(np.asarray(self.weights).reshape(-1))
        return self.labels[int(hits[0])] if len(hits) == 1 else None

    def meta(self) -> dict:
        """What a snapshot records of the label in force."""
        return {"label": self.text, "label_since": self.since, "label_switches": self.switches}

    def misfit(self, meta: dict, state: dict) -> str | None:
        """What does not fit in a snapshot's label: None where its ``meta`` records no label (or the model has
        none) or the blend its engine ``state`` holds is the one that label asks for; else why not, as said after
        "is damaged (...)". A recorded label is the --label the server began with (no length bound: a switch's
        ``LABEL_MAX_CHARS`` is for requests) or one switched to."""
        if "label" not in meta or not self.labels:
            return None
        text = meta["label"]
        try:
            weights = self.parse(text, max_chars=None)
        except ValueError as err:
            return f"its label: {err}"
        saved = np.asarray(state.get("label_weights", np.zeros(0)), dtype=np.float32).reshape(-1)
        if not np.array_equal(saved, weights):
            return f"its label {text!r} is not the blend its engine state holds"
        return None

    def adopt(self, meta: dict, state: dict) -> None:
        """Continue with the label a snapshot's ``meta`` records, its blend the one its engine ``state`` holds, as
        :meth:`misfit` found it (checked before, as the archive opened: ``archive_resume.engine_fit``; the label is
        not parsed again)."""
        if "label" not in meta or not self.labels:
            return
        text = meta["label"]
        since, switches = meta.get("label_since", 0), meta.get("label_switches", 0)
        self.since = since if isinstance(since, int) else 0
        self.switches = switches if isinstance(switches, int) else 0
        if text != self.text:
            logger.info("the archive's snapshot was taken with label %r (switched to at %d samples): the stream "
                        "goes on with it, not --label %r", text, self.since, self.text)
        self.text, self.weights = text, np.asarray(state["label_weights"], dtype=np.float32).reshape(-1)


def apply_label(engine, weights: np.ndarray) -> None:
    """Give ``engine`` (one stream) the blend ``weights [n_labels]`` from its next sample on, its
    RNN state, position and history kept: the blend is part of every engine's state_dict."""
    state = engine.state_dict()
    state["label_weights"] = np.asarray(weights, dtype=np.float32).reshape(1, -1)
    engine.load_state_dict(state)


# ----- the web side -------------------------------------------------------------------------------

def _error(status: int, text: str, **headers):
    from aiohttp import web

    return web.json_response({"error": text}, status=status, headers={"Cache-Control": "no-store", **headers})


def _authorized(request, token: str | None, refused: list[int]):
    """None where the request carries ``token``, else the refusal to send. ``refused[0]``: wrong tokens so
    far (the first is a warning in the log, the rest debug lines: a flood of them cannot fill it)."""
    if token is None:
        return _error(403, "label control is off: start the server with --control-token (or "
                           "--control-token-file) to switch labels while it plays")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(401, "send the operator token: Authorization: Bearer TOKEN",
                      **{"WWW-Authenticate": 'Bearer realm="wavegen"'})
    # bytes that are not UTF-8 (aiohttp keeps them as surrogate escapes) compared as sent: a wrong token, not a 500
    if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode()):
        first = not refused[0]
        refused[0] += 1
        logger.log(logging.WARNING if first else logging.DEBUG, "POST /label from %s with a wrong token: refused%s",
                   request.remote, " (further ones are logged with -v only)" if first else "")
        return _error(403, "wrong token")
    return None


async def _label_text(request) -> str:
    """The label a request asks for: its body as text, or a JSON body's "label" (ValueError). A body that is a JSON
    object with a "label" is read as JSON whatever its Content-Type (``curl -d '{"label": ...}'`` sends it as a
    form): no label's name is such an object."""
    body = await request.read()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the request body is not UTF-8 text") from None
    if request.content_type == "application/json":
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("the request body is not JSON") from None
    else:
        value = _json_object(text)
        if value is None or "label" not in value:
            return text.rstrip("\r\n")  # a line end (echo ... | curl --data-binary @-), not a label's own spaces
    if not isinstance(value, dict) or not isinstance(value.get("label"), str):
        raise ValueError('a JSON body needs {"label": "name or blend"}')
    return value["label"]


def _json_object(text: str) -> dict | None:
    """``text`` as a JSON object; None where it is not one (a label, or a blend, as plain text)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def label_handler(station, broadcast):
    """The aiohttp handler of ``POST /label``."""
    from aiohttp import web

    labels = station.label_state
    refused = [0]  # requests with a wrong token

    async def post_label(request):
        if not labels.labels:
            return _error(409, f"{station.name} is not conditioned on labels: there is no label to switch")
        refusal = _authorized(request, station.settings.control_token, refused)
        if refusal is not None:
            return refusal
        try:
            text = await _label_text(request)
            future = labels.request(text)
        except ValueError as err:
            return _error(400, str(err))
        except ServeError as err:  # the station has stopped
            return _error(503, str(err))
        try:
            result = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), LABEL_WAIT_SECONDS)
        except asyncio.TimeoutError:
            return web.json_response({"label": text, "pending": True}, status=202,
                                     headers={"Cache-Control": "no-store"})
        except ServeError as err:
            return _error(503, str(err))
        on_air = max(result["starts_at_seconds"] - broadcast.live_seconds(), 0.0)
        return web.json_response({**result, "on_air_in_seconds": round(on_air, 3)},
                                 headers={"Cache-Control": "no-store"})

    return post_label
