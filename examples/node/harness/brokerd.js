'use strict';
/*
 * Starts the real mockd and brokerd in a temp dir for the tests. Binaries
 * from $BROKER_BIN (default: build/bin of the repo). Their output goes to
 * files in the temp dir, removed at the end unless BROKER_TEST_KEEP=1.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const BIN = path.resolve(process.env.BROKER_BIN || path.join(__dirname, '..', '..', '..', 'build', 'bin'));

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
    this.exited = new Promise((resolve) => this.child.once('exit', (code, sig) => resolve({ code, sig })));
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

  async stop(ms = 10000) {
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
  await env.mockd.waitFor('mockd: listening on ', 5000);
  const cfg = {
    listen: env.socket,
    admin_listen: path.join(dir, 'b.admin.sock'),
    workers: 2,
    shutdown_grace_ms: 5000,
    max_request_bytes: 65536,
    rate_limit: { rate: 10000000, burst: 100000000 },
    backends: [{
      name: 'blender',
      address: `unix:${msock}`,
      pool_size: 8,
      request_timeout_ms: 5000,
      idle_timeout_ms: 5000,
      connect_timeout_ms: 1000,
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
  await env.broker.waitFor('"msg":"brokerd ready"', 10000);
  /* SIGTERM both; a broker that was still running must exit 0. */
  env.stop = async () => {
    const running = env.broker.alive();
    const rb = await env.broker.stop();
    await env.mockd.stop();
    if (process.env.BROKER_TEST_KEEP === '1') console.error(`files kept in ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
    if (running && rb.code !== 0) {
      throw new Error(`brokerd exited ${rb.code} (${rb.sig}) after SIGTERM: ${env.broker.stderr().slice(-2000)}`);
    }
  };
  return env;
}

module.exports = { start, sleep, BIN };
