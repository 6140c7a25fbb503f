#!/usr/bin/env python3
"""brokerclient: a client of brokerd's client socket (newline-delimited JSON
over a Unix socket), Python 3.8+ standard library only.

    with BrokerClient("broker.sock") as c:
        scene = c.call("get_scene_info")               # result, or raises BrokerError
        futs = [c.submit("get_object_info", {"name": n}) for n in names]
        infos = [f.result() for f in futs]              # pipelined on one connection

    async with AsyncBrokerClient("broker.sock") as c:
        infos = await asyncio.gather(*(c.call("get_object_info", {"name": n}) for n in names))

Design
- Ids are integers from 1, generated per connection; answers come back in any
  order and are matched by id, so any number of requests can be in flight on
  one connection.
- The sync client runs one reader thread per connection; it also enforces
  client-side deadlines (`timeout`, seconds), so a future never waits past its
  deadline nor past the end of the connection.
- Failures: the broker's error answers raise BrokerError (code, message,
  retry_after_ms, id); a connection that ends fails every pending request with
  ConnectionLost (a BrokerError, code "connection_lost"); a client-side
  deadline raises TimeoutError. A request that timed out client-side may still
  run at the backend; its late answer is dropped.
- The broker answers a line it cannot attribute (over max_request_bytes,
  nested deeper than max_json_depth) with "id": null. Such an answer goes to
  the oldest pending request it can be for (a line over the size, or over the
  depth, named in the message), or to the only pending request; otherwise it
  is dropped, and that request ends at its timeout or with the connection.
"""
import argparse
import asyncio
import heapq
import itertools
import json
import os
import re
import select
import socket
import sys
import threading
import time
from concurrent.futures import Future, InvalidStateError

__all__ = ["BrokerError", "ConnectionLost", "BrokerClient", "AsyncBrokerClient"]

ASYNC_LINE_LIMIT = 1 << 28  # asyncio's default (64 KiB) is below the broker's replies


class BrokerError(Exception):
    """An error answer from the broker (or ConnectionLost, raised client-side).

    code: the broker's error code ("timeout", "unavailable", ...);
    retry_after_ms: int or None (set on rate_limited and unavailable);
    id: the request id the answer carried (None when the broker could not
    read it); response: the whole answer (None for ConnectionLost)."""

    def __init__(self, code, message, retry_after_ms=None, id=None, response=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.id = id
        self.response = response


class ConnectionLost(BrokerError):
    """The connection to the broker ended before the answer came."""

    def __init__(self, message):
        super().__init__("connection_lost", message)


def _encode(rid, typ, params, backend, timeout_ms, cache):
    req = {"id": rid, "type": typ}
    if params is not None:
        req["params"] = params
    if backend is not None:
        req["backend"] = backend
    if timeout_ms is not None:
        req["timeout_ms"] = timeout_ms
    if cache is not None:
        req["cache"] = bool(cache)
    # ASCII only: the broker then forwards params byte for byte.
    return json.dumps(req, separators=(",", ":")).encode("ascii") + b"\n"


def _outcome(resp, raw):
    """(value, exception) for one answer."""
    if resp.get("status") == "success":
        return (resp if raw else resp.get("result")), None
    err = resp.get("error") or {}
    return None, BrokerError(err.get("code", "unknown"), err.get("message", ""),
                             err.get("retry_after_ms"), resp.get("id"), resp)


def _depth(line):
    """Deepest nesting of a JSON text (the top level is 1)."""
    depth = best = 0
    in_str = esc = False
    for ch in line.decode("ascii", "replace"):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _null_target(resp, pending):
    """The id an "id": null answer is for, or None. pending: ordered
    {id: line bytes}, oldest first."""
    err = resp.get("error") or {}
    msg = err.get("message", "")
    limit = re.search(r"\((\d+)\)", msg)
    if limit and err.get("code") == "too_large":
        n = int(limit.group(1))
        fits = [rid for rid, line in pending.items() if len(line) > n]
    elif limit and "max_json_depth" in msg:
        n = int(limit.group(1))
        fits = [rid for rid, line in pending.items() if _depth(line) >= n]
    else:
        fits = list(pending) if len(pending) == 1 else []
    return fits[0] if fits else None


class _Pending:
    __slots__ = ("future", "line", "raw", "deadline")

    def __init__(self, future, line, raw, deadline):
        self.future, self.line, self.raw, self.deadline = future, line, raw, deadline


def _settle(fut, value=None, exc=None):
    """Complete a concurrent future unless the user cancelled it."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except InvalidStateError:
        pass


class BrokerClient:
    """A synchronous, thread-safe client on one connection.

    path: the broker's client socket. timeout: default client-side deadline
    in seconds for each request (None: wait until the broker answers or the
    connection ends). Futures' done callbacks run on the reader thread: they
    must not block (nor call call())."""

    def __init__(self, path, timeout=None):
        self.path = path
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except BaseException:
            self._sock.close()
            raise
        self._ids = itertools.count(1)
        # Lock order: _send_lock, then _lock. _lock guards _pending,
        # _deadlines, _dead and the descriptors' lifetime (_fds_closed).
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()   # one whole line at a time
        self._fds_closed = False
        self._pending = {}                   # id -> _Pending, oldest first
        self._deadlines = []                 # heap of (deadline, id)
        self._dead = None                    # ConnectionLost once the connection ended
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name="brokerclient-reader")
        self._reader.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def submit(self, type, params=None, *, backend=None, timeout_ms=None, cache=None,
               timeout=None, raw=False):
        """Send one request now; returns a Future of its result (the whole
        answer with raw=True: status, result, cached, stale). timeout: the
        client-side deadline in seconds (default: the client's)."""
        timeout = self.timeout if timeout is None else timeout
        rid = next(self._ids)  # atomic in CPython
        line = _encode(rid, type, params, backend, timeout_ms, cache)
        fut = Future()
        with self._lock:
            if self._dead is not None:
                fut.set_exception(ConnectionLost(self._dead.message))
                return fut
            deadline = None if timeout is None else time.monotonic() + timeout
            # Registered before sending: the answer may beat sendall's return.
            self._pending[rid] = _Pending(fut, line, raw, deadline)
            if deadline is not None:
                if not self._deadlines or deadline < self._deadlines[0][0]:
                    self._wake()  # the reader sleeps until an earlier deadline
                heapq.heappush(self._deadlines, (deadline, rid))
        try:
            with self._send_lock:
                self._sock.sendall(line)
        except OSError as e:
            self._fail_all("cannot send to %s: %s" % (self.path, e))
        return fut

    def call(self, type, params=None, *, backend=None, timeout_ms=None, cache=None,
             timeout=None, raw=False):
        """One request; returns its result or raises BrokerError, ConnectionLost
        or TimeoutError (the client-side deadline `timeout`, in seconds)."""
        return self.submit(type, params, backend=backend, timeout_ms=timeout_ms, cache=cache,
                           timeout=timeout, raw=raw).result()

    def close(self):
        """Close the connection; pending requests fail with ConnectionLost."""
        with self._lock:
            if self._dead is None:
                self._dead = ConnectionLost("client closed the connection to %s" % self.path)
            self._shutdown()
            self._wake()
        if self._reader is not threading.current_thread():
            self._reader.join()

    # The reader thread owns the receive side, the wake-up pipe's read end
    # and, at the end, closing every descriptor.

    def _wake(self):
        """Wake the reader (under _lock)."""
        if self._fds_closed:
            return
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def _shutdown(self):
        """Wake the reader and any blocked sender with EOF/EPIPE (under _lock)."""
        if not self._fds_closed:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _read_loop(self):
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        buf = bytearray()
        reason = "broker closed the connection (%s)" % self.path
        try:
            while True:
                with self._lock:
                    if self._dead is not None:
                        break
                    wait = self._expire()
                events = poller.poll(None if wait is None else max(1, int(wait * 1000) + 1))
                for fd, _ in events:
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    chunk = self._sock.recv(1 << 18)
                    if not chunk:
                        raise EOFError
                    buf += chunk
                    end = buf.rfind(b"\n")
                    if end >= 0:
                        lines = bytes(buf[:end]).split(b"\n")
                        del buf[:end + 1]
                        for line in lines:
                            self._dispatch(line)
        except EOFError:
            pass
        except (OSError, ValueError) as e:
            reason = "connection to %s failed: %s" % (self.path, e)
        self._fail_all(reason)
        with self._send_lock, self._lock:  # no other thread is using a descriptor
            self._fds_closed = True
            self._sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _expire(self):
        """Fail requests past their deadline (under _lock); returns the
        seconds until the next deadline, or None."""
        now = time.monotonic()
        while self._deadlines:
            deadline, rid = self._deadlines[0]
            if deadline > now:
                return deadline - now
            heapq.heappop(self._deadlines)
            p = self._pending.pop(rid, None)
            if p is not None:
                _settle(p.future, exc=TimeoutError(
                    "no answer from the broker within the client timeout (request id %d)" % rid))
        return None

    def _dispatch(self, line):
        if not line.strip():
            return
        resp = json.loads(line)  # ValueError: a broken stream ends the connection
        if not isinstance(resp, dict):
            raise ValueError("answer is not a JSON object: %r" % line[:200])
        with self._lock:
            rid = resp.get("id")
            if rid is None:
                rid = _null_target(resp, {k: p.line for k, p in self._pending.items()})
            p = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if p is not None:  # else: a late answer to a request that timed out
            value, exc = _outcome(resp, p.raw)
            _settle(p.future, value, exc)

    def _fail_all(self, reason):
        with self._lock:
            if self._dead is None:
                self._dead = ConnectionLost(reason)
            dead, pending = self._dead, self._pending
            self._pending, self._deadlines = {}, []
            self._shutdown()
        for rid, p in pending.items():
            _settle(p.future, exc=ConnectionLost("%s; request id %d had no answer"
                                                 % (dead.message, rid)))


class AsyncBrokerClient:
    """An asyncio client on one connection; any number of concurrent calls.

        async with AsyncBrokerClient("broker.sock") as c:
            r = await c.call("get_scene_info")

    or `c = AsyncBrokerClient(path); await c.connect(); ...; await c.close()`.
    timeout: default client-side deadline in seconds (None: none)."""

    def __init__(self, path, timeout=None):
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending = {}   # id -> (future, line bytes, raw), oldest first
        self._reader = self._writer = self._task = None
        self._drain_lock = None
        self._dead = None

    async def connect(self):
        self._reader, self._writer = await asyncio.open_unix_connection(
            self.path, limit=ASYNC_LINE_LIMIT)
        self._drain_lock = asyncio.Lock()
        self._task = asyncio.ensure_future(self._read_loop())
        return self

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    async def call(self, type, params=None, *, backend=None, timeout_ms=None, cache=None,
                   timeout=None, raw=False):
        """One request; returns its result (the whole answer with raw=True) or
        raises BrokerError, ConnectionLost or TimeoutError."""
        if self._writer is None:
            raise ConnectionLost("not connected (call connect() first)")
        if self._dead is not None:
            raise ConnectionLost(self._dead.message)
        timeout = self.timeout if timeout is None else timeout
        rid = next(self._ids)
        line = _encode(rid, type, params, backend, timeout_ms, cache)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, line, raw)
        try:
            try:
                self._writer.write(line)
                async with self._drain_lock:
                    await self._writer.drain()
            except OSError as e:
                if fut.done():
                    raise fut.exception() from None
                raise ConnectionLost(self._dead.message if self._dead else
                                     "cannot send to %s: %s" % (self.path, e)) from None
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError("no answer from the broker within %g s (request id %d)"
                                   % (timeout, rid)) from None
        finally:
            self._pending.pop(rid, None)

    async def close(self):
        """Close the connection; pending calls fail with ConnectionLost."""
        if self._dead is None:
            self._dead = ConnectionLost("client closed the connection to %s" % self.path)
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._task is not None:
            await self._task

    async def _read_loop(self):
        reason = "broker closed the connection (%s)" % self.path
        try:
            while True:
                line = await self._reader.readline()
                if not line.endswith(b"\n"):
                    break  # EOF, perhaps mid-line
                if not line.strip():
                    continue
                resp = json.loads(line)
                if not isinstance(resp, dict):
                    raise ValueError("answer is not a JSON object: %r" % line[:200])
                rid = resp.get("id")
                if rid is None:
                    rid = _null_target(resp, {k: v[1] for k, v in self._pending.items()})
                entry = self._pending.pop(rid, None) if isinstance(rid, int) else None
                if entry is None or entry[0].done():
                    continue  # a late answer to a call that timed out or was cancelled
                value, exc = _outcome(resp, entry[2])
                if exc is not None:
                    entry[0].set_exception(exc)
                else:
                    entry[0].set_result(value)
        except (OSError, ValueError) as e:  # ValueError: bad JSON or a line over the limit
            reason = "connection to %s failed: %s" % (self.path, e)
        if self._dead is None:
            self._dead = ConnectionLost(reason)
        pending, self._pending = self._pending, {}
        for fut, _, _ in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost("%s (%d requests pending)"
                                                 % (self._dead.message, len(pending))))
        self._writer.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Send one request to brokerd and print the result.")
    ap.add_argument("--socket", default=os.environ.get("BROKER_SOCKET", "broker.sock"),
                    help="client socket (default $BROKER_SOCKET or broker.sock)")
    ap.add_argument("--backend")
    ap.add_argument("--timeout-ms", type=int, help="the broker's deadline for this request")
    ap.add_argument("--no-cache", action="store_true", help="skip the broker's cache")
    ap.add_argument("--raw", action="store_true", help="print the whole answer")
    ap.add_argument("type")
    ap.add_argument("params", nargs="?", help="a JSON object")
    a = ap.parse_args(argv)
    try:
        params = json.loads(a.params) if a.params else None
    except ValueError as e:
        print("brokerclient: PARAMS_JSON is not JSON: %s" % e, file=sys.stderr)
        return 2
    try:
        with BrokerClient(a.socket) as c:
            r = c.call(a.type, params, backend=a.backend, timeout_ms=a.timeout_ms,
                       cache=False if a.no_cache else None, raw=a.raw)
    except ConnectionLost as e:
        print("brokerclient: %s" % e.message, file=sys.stderr)
        return 2
    except BrokerError as e:
        extra = "" if e.retry_after_ms is None else " (retry after %d ms)" % e.retry_after_ms
        print("brokerclient: error %s: %s%s" % (e.code, e.message, extra), file=sys.stderr)
        return 1
    except OSError as e:
        print("brokerclient: cannot connect to %s: %s" % (a.socket, e), file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
