'use strict';
/*
 * brokerclient.js - a client of brokerd's client socket (newline-delimited
 * JSON over a Unix socket), Node's `net` module only.
 *
 *   const { BrokerClient } = require('./brokerclient');
 *   const c = await BrokerClient.connect('broker.sock');
 *   const scene = await c.call('get_scene_info');
 *   const infos = await Promise.all(names.map((n) => c.call('get_object_info', { name: n })));
 *   await c.close();
 *
 * Ids are integers from 1 per connection; answers come back in any order and
 * are matched by id, so any number of calls may be in flight on one
 * connection. A call rejects with BrokerError (the broker's error: code,
 * retryAfterMs, id), ConnectionLostError (code "connection_lost": the
 * connection ended first) or ClientTimeoutError (code "client_timeout": the
 * client-side `timeout`, in ms, passed; the request may still run at the
 * backend, and its late answer is dropped).
 *
 * The broker answers a line it cannot attribute (over max_request_bytes,
 * nested deeper than max_json_depth) with "id": null; such an answer goes to
 * the oldest pending call it can be for (a line over the size or depth the
 * message names), or to the only pending call; otherwise it is dropped.
 */
const net = require('node:net');

class BrokerError extends Error {
  constructor(code, message, { retryAfterMs = null, id = null, response = null } = {}) {
    super(`${code}: ${message}`);
    this.name = 'BrokerError';
    this.code = code;
    this.brokerMessage = message;
    this.retryAfterMs = retryAfterMs;
    this.id = id;
    this.response = response;
  }
}

class ConnectionLostError extends BrokerError {
  constructor(message) {
    super('connection_lost', message);
    this.name = 'ConnectionLostError';
  }
}

class ClientTimeoutError extends BrokerError {
  constructor(message, id) {
    super('client_timeout', message, { id });
    this.name = 'ClientTimeoutError';
  }
}

function depthOf(line) {
  let depth = 0;
  let best = 0;
  let inStr = false;
  let esc = false;
  for (const ch of line) {
    if (inStr) {
      if (esc) esc = false;
      else if (ch === '\\') esc = true;
      else if (ch === '"') inStr = false;
    } else if (ch === '"') inStr = true;
    else if (ch === '[' || ch === '{') best = Math.max(best, ++depth);
    else if (ch === ']' || ch === '}') depth--;
  }
  return best;
}

/* The pending id an "id": null answer is for, or null. */
function nullTarget(resp, pending) {
  const err = resp.error || {};
  const msg = String(err.message || '');
  const m = /\((\d+)\)/.exec(msg);
  let fits;
  if (m && err.code === 'too_large') {
    fits = [...pending].filter(([, p]) => Buffer.byteLength(p.line) > Number(m[1]));
  } else if (m && msg.includes('max_json_depth')) {
    fits = [...pending].filter(([, p]) => depthOf(p.line) >= Number(m[1]));
  } else {
    fits = pending.size === 1 ? [...pending] : [];
  }
  return fits.length ? fits[0][0] : null;
}

/* JSON with every non-ASCII character escaped: the broker then forwards
 * params byte for byte. */
function asciiJson(v) {
  return JSON.stringify(v).replace(/[\u007f-\uffff]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

class BrokerClient {
  /* Use BrokerClient.connect(path, { timeout }). timeout: the default
   * client-side deadline of each call, in ms (undefined: none). */
  constructor(socket, path, { timeout } = {}) {
    this.path = path;
    this.timeout = timeout;
    this._socket = socket;
    this._nextId = 1;
    this._pending = new Map(); // id -> { resolve, reject, line, raw, timer }, oldest first
    this._chunks = [];
    this._dead = null;
    this._closed = new Promise((resolve) => socket.once('close', resolve));
    socket.on('data', (chunk) => this._onData(chunk));
    socket.on('error', (e) => this._fail(`connection to ${path} failed: ${e.message}`));
    socket.on('close', () => this._fail(`broker closed the connection (${path})`));
  }

  static connect(path, options = {}) {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        resolve(new BrokerClient(socket, path, options));
      });
    });
  }

  /* One request. options: backend, timeoutMs (the broker's deadline), cache,
   * timeout (client-side, ms), raw (resolve with the whole answer: status,
   * result, cached, stale). Resolves with the result. */
  call(type, params, { backend, timeoutMs, cache, timeout = this.timeout, raw = false } = {}) {
    if (this._dead) return Promise.reject(this._dead);
    const id = this._nextId++;
    const req = { id, type };
    if (params !== undefined && params !== null) req.params = params;
    if (backend !== undefined) req.backend = backend;
    if (timeoutMs !== undefined) req.timeout_ms = timeoutMs;
    if (cache !== undefined) req.cache = Boolean(cache);
    let line;
    try {
      line = asciiJson(req) + '\n';
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, line, raw, timer: null };
      if (timeout !== undefined && timeout !== null) {
        p.timer = setTimeout(() => {
          this._pending.delete(id);
          reject(new ClientTimeoutError(
            `no answer from the broker within ${timeout} ms (request id ${id})`, id));
        }, timeout);
      }
      this._pending.set(id, p);
      this._socket.write(line);
    });
  }

  /* Close the connection; pending calls reject with ConnectionLostError. */
  close() {
    this._fail(`client closed the connection to ${this.path}`);
    return this._closed;
  }

  _onData(chunk) {
    let start = 0;
    let nl = chunk.indexOf(10);
    while (nl >= 0) {
      this._chunks.push(chunk.subarray(start, nl));
      const line = Buffer.concat(this._chunks).toString('utf8');
      this._chunks = [];
      if (!this._dispatch(line)) return;
      start = nl + 1;
      nl = chunk.indexOf(10, start);
    }
    if (start < chunk.length) this._chunks.push(chunk.subarray(start));
  }

  _dispatch(line) {
    if (!line.trim()) return true;
    let resp;
    try {
      resp = JSON.parse(line);
    } catch (e) {
      this._fail(`invalid answer from the broker: ${e.message}`);
      return false;
    }
    if (resp === null || typeof resp !== 'object') return true;
    const id = resp.id === null ? nullTarget(resp, this._pending) : resp.id;
    const p = this._pending.get(id);
    if (!p) return true; // a late answer to a call that timed out
    this._pending.delete(id);
    clearTimeout(p.timer);
    if (resp.status === 'success') {
      p.resolve(p.raw ? resp : resp.result);
    } else {
      const err = resp.error || {};
      p.reject(new BrokerError(err.code || 'unknown', err.message || '', {
        retryAfterMs: err.retry_after_ms ?? null, id: resp.id, response: resp,
      }));
    }
    return true;
  }

  _fail(reason) {
    if (!this._dead) this._dead = new ConnectionLostError(reason);
    const pending = this._pending;
    this._pending = new Map();
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      p.reject(new ConnectionLostError(`${this._dead.brokerMessage}; request id ${id} had no answer`));
    }
    this._socket.destroy();
  }
}

module.exports = { BrokerClient, BrokerError, ConnectionLostError, ClientTimeoutError };
