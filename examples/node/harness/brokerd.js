'use strict';
/*
 * Starts the real mockd and brokerd in a temp dir for the tests. Binaries
 * from $BROKER_BIN (default: build/bin of the repo). Their output goes to
 * files in the temp dir, removed at the end unless BROKER_TEST_KEEP=1.
 * Waits scale by SLOW, as in tests/integration/brokertest.py: 3 for a
 * sanitizer build's bin dir, or BROKER_TEST_SLOW=N.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const BIN = path.resolve(process.env.BROKER_BIN || path.join(__dirname, '..', '..', '..', 'build', 'bin'));

const SLOW = process.env.BROKER_TEST_SLOW ? Math.max(1, Number(process.env.BROKER_TEST_SLOW) || 3)
  : (/address|thread|sanitize|asan|tsan/.test(BIN) ? 3 : 1);
/* A duration in ms scaled by SLOW. */
const t = (ms) => Math.round(ms * SLOW);
const SANITIZER_MARKERS = ['AddressSanitizer', 'LeakSanitizer', 'runtime error:',
  'ThreadSanitizer', 'UndefinedBehaviorSanitizer'];

const live = new Set();
/* A test file that dies leaves no brokerd or mockd behind. */
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

class Proc {
  constructor(dir, name, argv) {
    this.name = name;
    this.errPath = path.join(dir, `${name}.err`);
    const err = fs.openSync(this.errPath, 'w');
    this.child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', err, err] });
    fs.closeSync(err);
    live.add(this);
    this.exited = new Promise((resolve) => this.child.once('exit', (code, sig) => {
      live.delete(this);
      resolve({ code, sig });
    }));
  }

  stderr() {
    return fs.readFileSync(this.errPath, 'utf8');
  }

  async waitFor(text, ms) {
    const end = Date.now() + ms;
    let done = false;
    this.exited.then(() => { done = true; });
    while (Date.now() < end) {
      if (this.stderr().includes(text)) return;
      if (done) throw new Error(`${this.name} exited before ready: ${this.stderr().slice(-2000)}`);
      await sleep(10);
    }
    throw new Error(`${this.name} not ready within ${ms} ms: ${this.stderr().slice(-2000)}`);
  }

  alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(sig = 'SIGKILL') {
    if (this.alive()) this.child.kill(sig);
    return this.exited;
  }

  async stop(ms = t(10000)) {
    if (!this.alive()) return this.exited;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), ms);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

/* mockd and brokerd (pool_size 8, no health checks, breaker and retries off,
 * as tests/integration/brokertest.py does). extra: top-level config keys. */
async function start(extra = {}) {
  for (const b of ['brokerd', 'mockd']) {
    if (!fs.existsSync(path.join(BIN, b))) throw new Error(`${b} not built in ${BIN} (set BROKER_BIN)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bt-node-'));
  const msock = path.join(dir, 'm.sock');
  const env = { dir, procs: [], socket: path.join(dir, 'b.sock') };
  env.mockd = new Proc(dir, 'mockd', [path.join(BIN, 'mockd'), '--listen', `unix:${msock}`]);
  env.procs.push(env.mockd);
  await env.mockd.waitFor('mockd: listening on ', t(5000));
  const cfg = {
    listen: env.socket,
    admin_listen: path.join(dir, 'b.admin.sock'),
    workers: 2,
    shutdown_grace_ms: t(5000),
    max_request_bytes: 65536,
    rate_limit: { rate: 10000000, burst: 100000000 },
    backends: [{
      name: 'blender',
      address: `unix:${msock}`,
      pool_size: 8,
      request_timeout_ms: t(5000),
      idle_timeout_ms: t(5000),
      connect_timeout_ms: t(1000),
      health: { interval_ms: 86400000 },
      breaker: { failures: 100000 },
      retry: { max: 0 },
    }],
    ...extra,
  };
  const cfgPath = path.join(dir, 'brokerd.json');
  fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 1));
  env.broker = new Proc(dir, 'brokerd', [path.join(BIN, 'brokerd'), '--config', cfgPath]);
  env.procs.push(env.broker);
  await env.broker.waitFor('"msg":"brokerd ready"', t(10000));
  /* SIGTERM both; a broker that was still running must exit 0, and no
   * sanitizer may have reported anything. */
  env.stop = async () => {
    const running = env.broker.alive();
    const rb = await env.broker.stop();
    await env.mockd.stop();
    const logs = [env.broker, env.mockd].map((p) => [p.name, p.stderr()]);
    if (process.env.BROKER_TEST_KEEP === '1') console.error(`files kept in ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
    if (running && rb.code !== 0) {
      throw new Error(`brokerd exited ${rb.code} (${rb.sig}) after SIGTERM: ${logs[0][1].slice(-2000)}`);
    }
    for (const [name, text] of logs) {
      const m = SANITIZER_MARKERS.find((k) => text.includes(k));
      if (m) throw new Error(`sanitizer report in ${name} stderr: ${text.slice(Math.max(0, text.indexOf(m) - 200), text.indexOf(m) + 1500)}`);
    }
  };
  return env;
}

module.exports = { start, sleep, t, BIN, SLOW };
