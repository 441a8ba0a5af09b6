'use strict';
// Load generator for `make bench` (driven by bench/run.py).
//
//   node loadgen.js
//
// Reads one JSON command per line on stdin and answers with one JSON event per line on
// stdout, so that bench/run.py can run several generator processes side by side and
// tell them apart. Two wire protocols are spoken over plain `ws` sockets:
//
//   native  realtime's frames (docs/protocol.md): {"auth":...}, {"subscribe":...},
//           {"publish":...}; deliveries are {"message":{...}} frames. The plain Channels
//           and bare `websockets` baselines answer the same frames.
//   bayeux  Faye's Bayeux over WebSocket: /meta/handshake, /meta/connect and
//           /meta/subscribe on the socket, publishes to /bench...; deliveries are
//           [{"channel":"/bench","data":...}] arrays.
//
// A publication's data carries the time it was sent ({"n": i, "t": ms since the epoch,
// fractional}); each delivery's latency is the receive time minus that. Latencies are
// kept in a log histogram (1% steps) that bench/run.py merges across processes.
//
// Every wait is bounded: connects and subscribes time out, and a measurement ends when
// the expected count arrives or its timeout passes, whichever is first.

const WebSocket = require('ws');
const readline = require('readline');
const { performance } = require('perf_hooks');

const now = () => performance.timeOrigin + performance.now();
const BUCKETS = 1400; // log1p(ms) * 100: covers up to ~20 minutes
const OPEN_TIMEOUT_MS = 30000;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

// Measurement state (one per process) -------------------------------------------------

const measure = {
  active: false,
  expected: 0,
  received: 0,
  hist: new Uint32Array(BUCKETS),
  first: 0,
  last: 0,
  cpu0: null,
  elu0: null,
  timer: null,
  unexpected: 0,
};

function record(sentAt) {
  const t = now();
  if (!measure.active) {
    measure.unexpected += 1;
    return;
  }
  if (measure.received === 0) {
    measure.first = t;
    measure.cpu0 = process.cpuUsage();
    measure.elu0 = performance.eventLoopUtilization();
  }
  measure.received += 1;
  measure.last = t;
  const ms = Math.max(0, t - sentAt);
  measure.hist[Math.min(BUCKETS - 1, Math.floor(Math.log1p(ms) * 100))] += 1;
  if (measure.received >= measure.expected) finishMeasure(false);
}

const T_KEY = '"t":';

// A native publication frame: the send time is the last "t" (in data).
function recordFrom(text) {
  const at = text.lastIndexOf(T_KEY);
  const sentAt = at < 0 ? NaN : parseFloat(text.slice(at + 4, at + 40));
  record(Number.isFinite(sentAt) ? sentAt : now());
}

// A Bayeux frame holding only deliveries: one "t" per delivery.
function recordAll(text) {
  let at = text.indexOf(T_KEY);
  while (at >= 0) {
    const sentAt = parseFloat(text.slice(at + 4, at + 40));
    record(Number.isFinite(sentAt) ? sentAt : now());
    at = text.indexOf(T_KEY, at + 4);
  }
}

function startMeasure(expected, timeoutMs) {
  measure.active = true;
  measure.expected = expected;
  measure.received = 0;
  measure.hist = new Uint32Array(BUCKETS);
  measure.first = measure.last = 0;
  measure.unexpected = 0;
  measure.timer = setTimeout(() => finishMeasure(true), timeoutMs);
  if (expected === 0) finishMeasure(false);
}

function finishMeasure(timedOut) {
  if (!measure.active) return;
  measure.active = false;
  clearTimeout(measure.timer);
  let cpuMs = 0;
  let elu = 0;
  const windowMs = measure.last - measure.first;
  if (measure.cpu0) {
    const cpu = process.cpuUsage(measure.cpu0);
    cpuMs = (cpu.user + cpu.system) / 1000;
    elu = performance.eventLoopUtilization(measure.elu0).utilization;
  }
  const hist = {};
  measure.hist.forEach((count, bucket) => {
    if (count) hist[bucket] = count;
  });
  emit({
    ev: 'result',
    received: measure.received,
    expected: measure.expected,
    timedOut,
    first: measure.first,
    last: measure.last,
    windowMs,
    cpuMs,
    elu,
    hist,
    stray: measure.unexpected,
  });
  measure.cpu0 = null;
}

// Connections ---------------------------------------------------------------------------

class Conn {
  constructor(url, protocol, index) {
    this.url = url;
    this.protocol = protocol;
    this.index = index;
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject}
    this.clientId = null;
    this.ws = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, {
        perMessageDeflate: false,
        skipUTF8Validation: true,
        handshakeTimeout: OPEN_TIMEOUT_MS,
      });
      this.ws = ws;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error('open timed out'));
      }, OPEN_TIMEOUT_MS);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve();
      });
      ws.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      ws.on('message', (data) => this.onFrame(data.toString()));
      ws.on('close', () => {
        for (const { reject: fail } of this.pending.values()) fail(new Error('closed'));
        this.pending.clear();
      });
    });
  }

  request(frame, id) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error('no reply within ' + OPEN_TIMEOUT_MS + ' ms'));
      }, OPEN_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.ws.send(frame);
    });
  }

  reply(id, ok, detail) {
    const waiter = this.pending.get(id);
    if (!waiter) return;
    this.pending.delete(id);
    if (ok) waiter.resolve(detail);
    else waiter.reject(new Error(JSON.stringify(detail)));
  }

  // native ------------------------------------------------------------------------------

  onFrame(text) {
    if (this.protocol === 'bayeux') return this.onBayeux(text);
    if (text.startsWith('{"message":')) {
      // The hot path: no full parse, just the send time from {"data":{"n":..,"t":..}}.
      recordFrom(text);
      return;
    }
    const frame = JSON.parse(text);
    if (frame.message !== undefined) {
      const data = frame.message.data;
      record(data && typeof data.t === 'number' ? data.t : now());
    } else if (frame.ok !== undefined || frame.err !== undefined) {
      this.reply(frame.id, frame.ok === true, frame);
    }
  }

  async setup(secret, channels) {
    if (this.protocol === 'bayeux') return this.setupBayeux(channels, secret);
    if (secret) {
      const id = this.nextId++;
      await this.request(JSON.stringify({ auth: { secret }, id }), id);
    }
    await this.subscribe(channels);
  }

  async subscribe(channels) {
    if (this.protocol === 'bayeux') return this.subscribeBayeux(channels);
    await Promise.all(
      channels.map((channel) => {
        const id = this.nextId++;
        return this.request(JSON.stringify({ subscribe: { channel }, id }), id);
      }),
    );
  }

  publish(channel, n) {
    const data = { n, t: now() };
    if (this.protocol === 'bayeux') {
      const id = String(this.nextId++);
      return this.request(
        JSON.stringify([{ channel: '/' + channel, data, clientId: this.clientId, id }]),
        id,
      );
    }
    const id = this.nextId++;
    return this.request(JSON.stringify({ publish: { channel, event: 'tick', data }, id }), id);
  }

  // bayeux ------------------------------------------------------------------------------

  onBayeux(text) {
    if (!text.includes('"successful"') && !text.includes('"/meta/')) {
      // The hot path: deliveries only (one or several per frame), no full parse.
      recordAll(text);
      return;
    }
    let messages = JSON.parse(text);
    if (!Array.isArray(messages)) messages = [messages];
    for (const message of messages) {
      const channel = message.channel || '';
      if (channel.startsWith('/meta/') || message.successful !== undefined) {
        if (channel === '/meta/connect' && message.successful && !this.pending.has(message.id)) {
          this.connect(); // the held connect came back: keep the session alive
        }
        this.reply(message.id, message.successful === true, message);
      } else if (message.data !== undefined) {
        record(typeof message.data.t === 'number' ? message.data.t : now());
      }
    }
  }

  connect() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const id = String(this.nextId++);
    this.ws.send(
      JSON.stringify([{ channel: '/meta/connect', clientId: this.clientId, connectionType: 'websocket', id }]),
    );
  }

  async setupBayeux(channels, secret) {
    const id = String(this.nextId++);
    const handshake = { channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['websocket'], id };
    // realtime reads credentials from the handshake's ext.auth; Faye ignores them.
    if (secret) handshake.ext = { auth: { secret } };
    const reply = await this.request(JSON.stringify([handshake]), id);
    this.clientId = reply.clientId;
    this.connect();
    await this.subscribeBayeux(channels);
  }

  async subscribeBayeux(channels) {
    await Promise.all(
      channels.map((channel) => {
        const id = String(this.nextId++);
        return this.request(
          JSON.stringify([
            { channel: '/meta/subscribe', clientId: this.clientId, subscription: '/' + channel, id },
          ]),
          id,
        );
      }),
    );
  }

  close() {
    if (this.ws) this.ws.terminate();
  }
}

// Commands ------------------------------------------------------------------------------

const subscribers = [];
let publisher = null;

function channelsFor(spec, index) {
  return spec.map((name) => name.replace('{i}', String(index)));
}

// Run `count` jobs with at most `concurrency` in flight; returns [done, failed, firstError].
async function pool(count, concurrency, job) {
  let next = 0;
  let done = 0;
  let failed = 0;
  let firstError = null;
  async function worker() {
    while (next < count) {
      const i = next++;
      try {
        await job(i);
        done += 1;
      } catch (error) {
        failed += 1;
        if (!firstError) firstError = String(error && error.message ? error.message : error);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return [done, failed, firstError];
}

const commands = {
  // Open `count` subscribers; subscriber k connects to urls[k % urls.length].
  async connect(cmd) {
    const start = now();
    const base = cmd.offset || 0;
    const [done, failed, error] = await pool(cmd.count, cmd.concurrency || 50, async (i) => {
      const index = base + i;
      const conn = new Conn(cmd.urls[index % cmd.urls.length], cmd.protocol, index);
      await conn.open();
      subscribers.push(conn);
      await conn.setup(cmd.secret || null, channelsFor(cmd.channels, index));
    });
    emit({ ev: 'connected', done, failed, error, ms: now() - start, total: subscribers.length });
  },

  // Subscribe every open subscriber to more channels ({i} is its index).
  async subscribe(cmd) {
    const start = now();
    const [done, failed, error] = await pool(subscribers.length, cmd.concurrency || 50, (i) =>
      subscribers[i].subscribe(channelsFor(cmd.channels, subscribers[i].index)),
    );
    emit({ ev: 'subscribed', done, failed, error, ms: now() - start });
  },

  async expect(cmd) {
    startMeasure(cmd.count, cmd.timeoutMs);
    emit({ ev: 'expecting', count: cmd.count });
  },

  async publisher(cmd) {
    publisher = new Conn(cmd.url, cmd.protocol, -1);
    await publisher.open();
    await publisher.setup(cmd.secret || null, []);
    emit({ ev: 'publisher' });
  },

  // Publish to cmd.channels in order, with at most cmd.window publishes awaiting their ack.
  async publish(cmd) {
    const channels = cmd.channels;
    const first = now();
    let errors = 0;
    let firstError = null;
    let sent = 0;
    await pool(channels.length, cmd.window || 1, async (i) => {
      sent = i + 1;
      try {
        await publisher.publish(channels[i], i);
      } catch (error) {
        errors += 1;
        if (!firstError) firstError = String(error.message);
        throw error;
      }
    });
    emit({ ev: 'published', count: channels.length, sent, errors, error: firstError, first, last: now() });
  },

  async close() {
    for (const conn of subscribers) conn.close();
    if (publisher) publisher.close();
    emit({ ev: 'closed' });
    setTimeout(() => process.exit(0), 50);
  },
};

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  const handler = commands[cmd.cmd];
  if (!handler) return emit({ ev: 'error', error: 'unknown command ' + cmd.cmd });
  handler(cmd).catch((error) => emit({ ev: 'error', cmd: cmd.cmd, error: String(error && error.stack) }));
});
lines.on('close', () => process.exit(0));
