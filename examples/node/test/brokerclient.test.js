'use strict';
/* brokerclient.js against the real brokerd and mockd (see ../harness/brokerd.js). */
const test = require('node:test');
const assert = require('node:assert/strict');
const { start, sleep, t } = require('../harness/brokerd');
const {
  BrokerClient, BrokerError, ConnectionLostError, ClientTimeoutError,
} = require('../brokerclient');

/* Request i of a batch: every 10th is slow, so answers overtake each other. */
function mixed(i) {
  return i % 10 === 0 ? ['fault_slow', { ms: 150 }] : ['echo', { i, s: `r${i}` }];
}

function checkMixed(i, r) {
  const [type, params] = mixed(i);
  if (type === 'echo') assert.deepEqual(r.params, params, `request ${i}`);
  else assert.deepEqual(r, { type: 'fault_slow', executed: true }, `request ${i}`);
}

async function rejectsWith(promise, code) {
  try {
    const r = await promise;
    assert.fail(`expected ${code}, got result ${JSON.stringify(r).slice(0, 300)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(e instanceof BrokerError, `not a BrokerError: ${e}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
}

test('call returns the result; raw gives the whole answer', async () => {
  const env = await start();
  const c = await BrokerClient.connect(env.socket, { timeout: t(5000) });
  try {
    const r = await c.call('echo', { a: [1, 2], u: '\u00e9\u{1f600}' });
    assert.deepEqual(r.params, { a: [1, 2], u: '\u00e9\u{1f600}' });
    assert.equal(typeof (await c.call('get_scene_info')), 'object');
    const full = await c.call('get_scene_info', {}, { raw: true });
    assert.equal(full.status, 'success');
    assert.equal(full.cached, true);
    const fresh = await c.call('get_scene_info', {}, { raw: true, cache: false, backend: 'blender', timeoutMs: 1000 });
    assert.equal(fresh.cached, false);
  } finally {
    await c.close();
    await env.stop();
  }
});

test('100 pipelined calls on one connection, matched by id', async () => {
  const env = await start();
  const c = await BrokerClient.connect(env.socket, { timeout: t(20000) });
  try {
    const order = [];
    const rs = await Promise.all(Array.from({ length: 100 }, (_, i) =>
      c.call(...mixed(i)).then((r) => { order.push(i); return r; })));
    rs.forEach((r, i) => checkMixed(i, r));
    assert.notDeepEqual(order, [...order].sort((a, b) => a - b), 'answers came back in request order');
  } finally {
    await c.close();
    await env.stop();
  }
});

test('broker errors reject with their code', async () => {
  const env = await start();
  const c = await BrokerClient.connect(env.socket, { timeout: t(10000) });
  try {
    let e = await rejectsWith(c.call('echo', {}, { backend: 'nope' }), 'unknown_backend');
    assert.equal(typeof e.id, 'number');
    e = await rejectsWith(c.call('fault_slow', { ms: 2000 }, { timeoutMs: 100 }), 'timeout');
    assert.match(e.brokerMessage, /100 ms/);
    e = await rejectsWith(c.call('echo', [1, 2]), 'bad_request');
    assert.match(e.brokerMessage, /params/);
    e = await rejectsWith(c.call('fault_error', { message: 'boom' }), 'backend_error');
    assert.equal(e.brokerMessage, 'boom');
    // "id": null answers, with other calls in flight, reach the right call.
    const slow = c.call('fault_slow', { ms: 300 });
    const big = rejectsWith(c.call('echo', { big: 'x'.repeat(70000) }), 'too_large');
    const deep = rejectsWith(c.call('echo', { a: JSON.parse('['.repeat(80) + '1' + ']'.repeat(80)) }), 'bad_request');
    const ok = c.call('echo', { n: 3 });
    assert.equal((await big).id, null);
    assert.match((await deep).brokerMessage, /max_json_depth/);
    assert.deepEqual((await ok).params, { n: 3 });
    assert.deepEqual(await slow, { type: 'fault_slow', executed: true });
  } finally {
    await c.close();
    await env.stop();
  }
});

test('rate_limited carries retryAfterMs', async () => {
  const env = await start({ rate_limit: { rate: 1, burst: 1 } });
  const c = await BrokerClient.connect(env.socket, { timeout: t(10000) });
  try {
    await c.call('echo');
    const e = await rejectsWith(c.call('echo'), 'rate_limited');
    assert.ok(Number.isInteger(e.retryAfterMs) && e.retryAfterMs > 0, `retryAfterMs ${e.retryAfterMs}`);
  } finally {
    await c.close();
    await env.stop();
  }
});

test('client-side timeout rejects; the late answer is dropped', async () => {
  const env = await start();
  const c = await BrokerClient.connect(env.socket);
  try {
    const t0 = Date.now();
    const e = await rejectsWith(c.call('fault_slow', { ms: 1500 }, { timeout: 300 }), 'client_timeout');
    assert.ok(e instanceof ClientTimeoutError);
    const dt = Date.now() - t0;
    assert.ok(dt >= 250 && dt < t(1200), `timed out after ${dt} ms`);
    const f1 = c.call('fault_slow', { ms: 1000 }, { timeout: t(5000) });
    await rejectsWith(c.call('fault_slow', { ms: 800 }, { timeout: 200 }), 'client_timeout');
    assert.deepEqual(await f1, { type: 'fault_slow', executed: true });
    await sleep(500);
    assert.deepEqual((await c.call('echo', { next: 1 }, { timeout: t(5000) })).params, { next: 1 });
  } finally {
    await c.close();
    await env.stop();
  }
});

test('a dropped connection rejects every pending call promptly', async () => {
  const env = await start();
  const c = await BrokerClient.connect(env.socket); // no client timeout: only the drop ends them
  try {
    const pending = Array.from({ length: 3 }, () => c.call('fault_slow', { ms: 5000 }));
    assert.deepEqual((await c.call('echo', { x: 1 }, { timeout: t(5000) })).params, { x: 1 });
    const t0 = Date.now();
    await env.broker.kill('SIGKILL');
    const rs = await Promise.allSettled(pending);
    assert.ok(Date.now() - t0 < t(2000), `rejected after ${Date.now() - t0} ms`);
    for (const r of rs) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.reason instanceof ConnectionLostError, String(r.reason));
      assert.equal(r.reason.code, 'connection_lost');
    }
    await rejectsWith(c.call('echo'), 'connection_lost');
  } finally {
    await c.close();
    await env.stop();
  }
});

test('close() rejects pending calls', async () => {
  const env = await start();
  const c = await BrokerClient.connect(env.socket);
  try {
    const p = rejectsWith(c.call('fault_slow', { ms: 1000 }), 'connection_lost');
    await sleep(50);
    await c.close();
    const e = await p;
    assert.match(e.brokerMessage, /client closed/);
    await rejectsWith(c.call('echo'), 'connection_lost');
  } finally {
    await env.stop();
  }
});

test('connect to a missing socket rejects', async () => {
  await assert.rejects(BrokerClient.connect('/nonexistent/broker.sock'), { code: 'ENOENT' });
});
