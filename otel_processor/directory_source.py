"""Where a directory comes from: a YAML/JSON file or an http(s) URL, read once or kept fresh.

:func:`load_directory` reads, decodes and validates one document (:func:`parse_directory` of
:mod:`otel_processor.directory` does the validation). :class:`DirectorySource` keeps the last
good directory in force while a named background thread refreshes it. The defaults the
service's configuration uses are defined here: :data:`DEFAULT_REFRESH_INTERVAL`,
:data:`DEFAULT_TIMEOUT`.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import pathlib
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

import yaml

from otel_processor.directory import Directory, DirectoryError, parse_directory

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

#: Seconds between two loads of a directory by :class:`DirectorySource`'s thread.
DEFAULT_REFRESH_INTERVAL = 60.0
#: Seconds an HTTP fetch of a directory may take.
DEFAULT_TIMEOUT = 10.0
#: A directory document larger than this is refused (a misconfigured URL, not a directory).
MAX_DOCUMENT_BYTES = 64 * 2**20
_THREAD_NAME = "otel-processor-directory-refresh"
_IN_MEMORY = "<in-memory directory>"


def _is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def _describe(source: str) -> str:
    """The source for logs and errors, without credentials (userinfo, query string)."""
    if not _is_url(source):
        return source
    parts = urllib.parse.urlsplit(source)
    query = "<redacted>" if parts.query else ""
    return urllib.parse.urlunsplit(
        parts._replace(netloc=parts.netloc.rpartition("@")[2], query=query, fragment="")
    )


def _document(data: bytes) -> object:
    """A JSON document is decoded as JSON, anything else as YAML (JSON is nearly YAML)."""
    if data.lstrip()[:1] in (b"{", b"["):
        # PyYAML decodes the escaped surrogate pair "\ud83d\ude00" (how json.dumps writes an
        # emoji by default) as two lone surrogates, which parse_directory refuses; JSON reads
        # it as the one character it is.
        try:
            return json.loads(data)
        except ValueError:
            pass  # YAML's flow style (`{tenants: [...]}`), or broken: YAML says what is wrong
    return yaml.safe_load(data)


def _decode(data: bytes, where: str) -> Directory:
    try:
        doc = _document(data)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise DirectoryError(f"{where}: not valid YAML or JSON: {detail}") from None
    try:
        return parse_directory(doc)
    except DirectoryError as exc:
        raise DirectoryError(f"{where}: {exc}") from None


def _read_file(path: str, where: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise DirectoryError(f"{where}: cannot read: {exc.strerror or exc}") from None


def _requests():
    """The requests module, imported on first use: a file source never needs it, and the
    service's configuration (which every CLI command reads) imports this module's defaults."""
    import requests

    return requests


def _http_get(session, url: str, timeout: float, etag: str | None, where: str):
    """GET ``url`` -> (body, etag); body is None for 304 Not Modified."""
    headers = {"Accept": "application/yaml, application/json;q=0.9, */*;q=0.5"}
    if etag:
        headers["If-None-Match"] = etag
    try:
        with session.get(url, timeout=timeout, headers=headers, stream=True) as response:
            if response.status_code == 304:
                return None, response.headers.get("ETag") or etag
            if not 200 <= response.status_code < 300:
                raise DirectoryError(f"{where}: HTTP {response.status_code}")
            # ``timeout`` bounds each socket read; a server that trickles a byte at a time
            # would never hit it. ``read1`` returns what has arrived, so the whole answer
            # is also held to a deadline.
            deadline = time.monotonic() + timeout
            body = bytearray()
            raw = response.raw
            while True:
                chunk = raw.read1(65536, decode_content=True)
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise DirectoryError(f"{where}: larger than {MAX_DOCUMENT_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise DirectoryError(f"{where}: no complete answer within {timeout:g} s")
            return bytes(body), response.headers.get("ETag")
    except DirectoryError:
        raise
    except Exception as exc:  # requests', urllib3's (raw reads) and the socket's errors
        raise DirectoryError(f"{where}: {type(exc).__name__}: {exc}") from None


def load_directory(
    source: str | os.PathLike,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> Directory:
    """Load and validate a directory from a YAML/JSON file or an http(s) URL.

    Raises :class:`DirectoryError` for any failure; the message starts with the source.
    """
    text = os.fspath(source)
    where = _describe(text)
    if _is_url(text):
        body, _ = _http_get(session or _requests(), text, timeout, None, where)
    else:
        body = _read_file(text, where)
    return _decode(body, where)


def default_directory_path() -> pathlib.Path:
    """The demo directory shipped in the package (``attribution.md``'s worked example and more)."""
    return pathlib.Path(
        str(importlib.resources.files("otel_processor").joinpath("data", "demo-directory.yaml"))
    )


class DirectorySource:
    """A directory from a file or an http(s) URL; the last good document stays in force.

    A failed load (unreadable, non-2xx, not YAML/JSON, invalid) is counted and logged, never
    raised. A URL is polled with ``If-None-Match``; 304 keeps the current directory and counts as
    success. A :class:`Directory` given directly is served as is (no thread, always ready).
    """

    def __init__(
        self,
        source: str | os.PathLike | Directory,
        *,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for field, value in (("refresh_interval", refresh_interval), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{field}: must be a positive number of seconds, got {value!r}")
        self._interval, self._timeout, self._clock = float(refresh_interval), float(timeout), clock
        self._static = source if isinstance(source, Directory) else None
        self._source = "" if self._static is not None else os.fspath(source)
        self._url = _is_url(self._source)
        self._where = _describe(self._source) or _IN_MEMORY
        # Reused between polls (keep-alive); only a URL needs one.
        self._session = session
        if session is None and self._url:
            self._session = _requests().Session()
        # Swapped whole by a successful load (one reference store, atomic): readers take no lock.
        self._current = self._static if self._static is not None else Directory.empty()
        # Serialises loads; guards _etag, _file_seen, _file_ok and the three health fields below
        # (written under it, read without it: each is one attribute read).
        self._load_lock = threading.Lock()
        self._etag: str | None = None
        self._file_seen: tuple[int, int] | None = None  # (mtime_ns, size) of the last file read
        self._file_ok = False
        self.refresh_failures = 0
        self.last_success: float | None = clock() if self._static is not None else None
        self.last_error: str | None = None
        # Guards _thread and _stop_event (start/stop may come from any thread).
        self._thread_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    @property
    def current(self) -> Directory:
        """The last good directory (:meth:`Directory.empty` until the first success)."""
        return self._current

    @property
    def ready(self) -> bool:
        """Whether a directory has been loaded at least once."""
        return self.last_success is not None

    def describe(self) -> str:
        """The source, for logs: the file path, the URL without its credentials (userinfo and
        query string), or ``<in-memory directory>``."""
        return self._where

    def refresh(self) -> bool:
        """Load now (a file is always re-read); True on success, a 304 included. Never raises."""
        return self._load(force=True)

    def poll(self) -> bool:
        """What the background thread does each interval: like :meth:`refresh`, but a file is
        re-read only when its mtime or size changed. An unchanged file that failed before
        returns False without counting the failure again."""
        return self._load(force=False)

    def _load(self, *, force: bool) -> bool:
        if self._static is not None:
            self.last_success = self._clock()
            return True
        with self._load_lock:
            try:
                if self._url:
                    self._load_url()
                elif not self._load_file(force) and not self._file_ok:
                    return False  # unchanged since it failed: nothing new to count
            except Exception as exc:  # never raise: a bad directory must not stop the service
                self.refresh_failures += 1
                known = isinstance(exc, DirectoryError)
                self.last_error = str(exc) if known else f"{self._where}: {exc!r}"
                if self.ready:
                    logger.warning("directory not loaded, last good kept: %s", self.last_error)
                else:
                    logger.warning(
                        "directory not loaded (no directory has loaded yet; spans wait): %s",
                        self.last_error,
                    )
                return False
            self.last_success, self.last_error = self._clock(), None
            return True

    def _load_url(self) -> None:
        etag = self._etag if self.ready else None
        body, etag = _http_get(self._session, self._source, self._timeout, etag, self._where)
        if body is not None:
            self._current, self._etag = _decode(body, self._where), etag
        elif not self.ready:
            raise DirectoryError(f"{self._where}: 304 Not Modified without a cached document")

    def _load_file(self, force: bool) -> bool:
        """Read the file when forced or changed; False when it was left unread."""
        try:
            stat = os.stat(self._source)
        except OSError as exc:
            raise DirectoryError(f"{self._where}: cannot read: {exc.strerror}") from None
        seen = (stat.st_mtime_ns, stat.st_size)
        if not force and seen == self._file_seen:
            return False
        # Stat before read: a write racing the read changes mtime, so the next poll reads again.
        self._file_seen, self._file_ok = seen, False
        self._current = _decode(_read_file(self._source, self._where), self._where)
        self._file_ok = True
        return True

    def _run(self, stop: threading.Event) -> None:
        if not self.ready:
            self.poll()
        while not stop.wait(self._interval):
            self.poll()

    def start(self) -> None:
        """Refresh every ``refresh_interval`` in a named daemonic thread; idempotent."""
        if self._static is not None:
            return
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop_event = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop_event,), name=_THREAD_NAME, daemon=True
            )
            self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: fresh locks (a parent's thread may have held one at the fork)
        and, if the parent was refreshing, the child's own refresh thread."""
        was_running = self._thread is not None
        self._load_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._thread = None
        self._stop_event = threading.Event()
        if was_running:
            self.start()

    def stop(self) -> None:
        """Stop the background thread and join it; idempotent."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
            self._stop_event.set()
        if thread is not None and thread is not threading.current_thread():
            # A load in flight ends within its own timeout; the thread is daemonic regardless.
            thread.join(self._timeout + 5.0)
