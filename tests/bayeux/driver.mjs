// driver.mjs - lets a test drive a REAL Bayeux client library step by step.
//
//   node driver.mjs faye|cometd
//
// Protocol: one JSON command per line on stdin, one JSON line per reply/event on stdout.
//   in : {"id":1,"cmd":"connect","url":"http://127.0.0.1:8000/realtime/bayeux","transport":"websocket","ext":{...}}
//   out: {"id":1,"ok":true,"clientId":"..."}  or  {"id":1,"ok":false,"error":"..."}
//   out (unsolicited): {"event":"message",...} {"event":"meta",...} {"event":"transport",...} {"event":"error",...}
// Commands: connect, subscribe, unsubscribe, publish, remote_call, disconnect (see README in the brief / driver.py).
// Optional fields: "timeout" (seconds the driver waits for the server, default 10) on every command;
// on connect: "options" (passed to new faye.Client / cometd.configure), "resubscribe" (cometd only:
// re-subscribe after a re-handshake, as CometD apps do by hand), "jsonp_shim" (cometd callback-polling,
// default true). Set BAYEUX_DRIVER_DEBUG=1 for the libraries' debug logs on stderr.
import readline from "node:readline";
import util from "node:util";

const LIB = process.argv[2];
const DEBUG = !!process.env.BAYEUX_DRIVER_DEBUG;

// stdout carries the protocol only: send all console output (the libraries log there) to stderr.
const toStderr = (...a) => process.stderr.write(util.format(...a) + "\n");
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// --- helpers -------------------------------------------------------------------------------------

// JSON-safe copy of a Bayeux message. CometD attaches client-side failures as message.failure,
// which holds XHR / WebSocket objects: keep only their readable parts.
function clean(message) {
    if (message === undefined || message === null) return null;
    const out = {...message};
    if (message.failure) {
        const f = message.failure;
        out.failure = {reason: f.reason, httpCode: f.httpCode, websocketCode: f.websocketCode,
            connectionType: f.connectionType, exception: f.exception === undefined ? undefined : String(f.exception)};
    }
    const seen = new WeakSet();
    return JSON.parse(JSON.stringify(out, (k, v) => {
        if (typeof v === "function") return undefined;
        if (v && typeof v === "object") { if (seen.has(v)) return undefined; seen.add(v); }
        return v;
    }));
}

// An Error that carries extra reply fields (the server's error, advice, the raw reply).
function failure(error, reply) {
    const e = new Error(error);
    if (reply) e.extra = {advice: reply.advice ?? null, reply: clean(reply)};
    return e;
}
const succeeded = (reply) => { if (!reply.successful) throw failure(errorOf(reply), reply); return reply; };
const errorOf = (reply) => reply.error ?? reply.failure?.reason ??
    (reply.failure?.exception !== undefined ? String(reply.failure.exception) : "unsuccessful");

function withTimeout(promise, seconds, what) {
    let timer;
    const expiry = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timeout after ${seconds}s waiting for ${what}`)), seconds * 1000);
    });
    return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}
const secs = (c) => (typeof c.timeout === "number" && c.timeout > 0 ? c.timeout : 10);
const need = (c, field) => {
    if (typeof c[field] !== "string" || !c[field]) throw new Error(`missing string field '${field}'`);
    return c[field];
};
const live = (client) => { if (!client) throw new Error("not connected"); return client; };
const onMessage = (channel, m) => emit({event: "message", channel, message_channel: m?.channel ?? channel,
    data: m?.data ?? null, ext: m?.ext ?? null});
// Meta replies are reported, except the (frequent) successful /meta/connect ones.
const onMeta = (m) => {
    if (m && !(m.channel === "/meta/connect" && m.successful)) emit({event: "meta", channel: m.channel, message: clean(m)});
};

// --- faye ----------------------------------------------------------------------------------------
// Faye's client API resolves promises but hides reply messages, so replies are matched by id
// in an extension: the outgoing side notes the id of the next message for a key, the incoming
// side settles the waiter for that id with the raw reply.
async function fayeAdapter() {
    const {default: faye} = await import("faye");
    if (DEBUG) faye.logger = {debug: toStderr, info: toStderr, warn: toStderr, error: toStderr, fatal: toStderr};
    let client = null, state = null;
    const subs = new Map();

    function expectReply(key, seconds, action) {
        const waiter = {key};
        const done = new Promise((resolve) => { waiter.resolve = resolve; });
        if (!state.queued.has(key)) state.queued.set(key, []);
        state.queued.get(key).push(waiter);
        const st = state;
        action();
        return withTimeout(done, seconds, `reply on ${key}`).finally(() => {
            const q = st.queued.get(key) || [];
            if (q.includes(waiter)) q.splice(q.indexOf(waiter), 1);
            if (waiter.id !== undefined) st.pending.delete(waiter.id);
        });
    }
    const keyOf = (m) => m.channel.startsWith("/meta/") ? `${m.channel} ${m.subscription ?? ""}` : `publish ${m.channel}`;

    async function teardown() {
        if (!client) return;
        const c = client, st = state;
        client = null; subs.clear();
        try {
            const p = st.connected ? c.disconnect() : null;   // faye only sends /meta/disconnect once connected
            if (p) await withTimeout(p, 3, "disconnect");
        } catch { /* best effort */ }
        st.dead = true;              // the outgoing extension now drops everything: no retries reach the wire
        c._dispatcher.close();       // and close the WebSocket / transport (no public API for this)
    }

    return {
        teardown,
        async connect(c) {
            const url = need(c, "url"), transport = need(c, "transport");
            if (transport === "callback-polling") throw new Error("unsupported: faye has no callback-polling transport in Node");
            if (!["websocket", "long-polling"].includes(transport)) throw new Error(`unknown transport ${transport}`);
            await teardown();
            const st = state = {dead: false, connected: false, queued: new Map(), pending: new Map(), delivering: null};
            const cl = client = new faye.Client(url, c.options || {});
            // Faye always handshakes over HTTP (long-polling) and only then upgrades to WebSocket;
            // long-polling cannot be disabled (the handshake would find no transport), websocket can.
            if (transport === "long-polling") cl.disable("websocket");
            let handshake;
            const handshook = new Promise((resolve, reject) => { handshake = {resolve, reject}; });
            cl.addExtension({
                outgoing(m, callback) {
                    if (st.dead) return callback(null);
                    if (m.channel === "/meta/handshake" && c.ext) m.ext = Object.assign({}, m.ext, c.ext);
                    const q = st.queued.get(keyOf(m));
                    if (q && q.length && m.id !== undefined) { const w = q.shift(); w.id = m.id; st.pending.set(m.id, w); }
                    callback(m);
                },
                incoming(m, callback) {
                    if (m.channel?.startsWith("/meta/")) onMeta(m);
                    if (m.successful !== undefined && st.pending.has(m.id)) st.pending.get(m.id).resolve(m);
                    if (m.channel === "/meta/handshake") {
                        if (m.successful) { st.connected = true; handshake.resolve(m); }
                        else {
                            handshake.reject(failure(errorOf(m), m));
                            // Faye retries a refused handshake forever; advice "none" stops it.
                            m.advice = Object.assign({}, m.advice, {reconnect: "none"});
                            setTimeout(() => { st.dead = true; cl._dispatcher.close(); }, 0);
                        }
                    }
                    st.delivering = m;   // subscription callbacks run synchronously inside callback(m)
                    try { callback(m); } finally { st.delivering = null; }
                },
            });
            cl.on("transport:down", () => emit({event: "transport", state: "down"}));
            cl.on("transport:up", () => emit({event: "transport", state: "up"}));
            cl.connect();   // the handshake is lazy in faye: force it now
            try {
                const reply = await withTimeout(handshook, secs(c), "handshake reply");
                return {clientId: reply.clientId, advice: reply.advice ?? null, reply: clean(reply)};
            } catch (e) { if (client === cl) await teardown(); throw e; }
        },
        async subscribe(c) {
            const ch = need(c, "channel"), cl = live(client), st = state;
            if (subs.has(ch)) throw new Error(`already subscribed to ${ch} in this driver`);
            let sub;
            const reply = succeeded(await expectReply(`/meta/subscribe ${ch}`, secs(c), () => {
                sub = cl.subscribe(ch, () => onMessage(ch, st.delivering));
            }));
            subs.set(ch, sub);
            return {reply: clean(reply)};
        },
        async unsubscribe(c) {
            const ch = need(c, "channel");
            if (!client || !subs.has(ch)) throw new Error(`not subscribed to ${ch}`);
            const sub = subs.get(ch);
            subs.delete(ch);
            const reply = succeeded(await expectReply(`/meta/unsubscribe ${ch}`, secs(c), () => client.unsubscribe(ch, sub)));
            return {reply: clean(reply)};
        },
        async publish(c) {
            const ch = need(c, "channel"), cl = live(client);
            const reply = succeeded(await expectReply(`publish ${ch}`, secs(c), () => cl.publish(ch, c.data ?? null)));
            return {ack: clean(reply), ext: reply.ext ?? null, data: reply.data ?? null};
        },
        // Faye has no remote calls: publish to the /service channel and return the ack.
        remote_call(c) { return this.publish(c); },
        async disconnect() { await teardown(); return {}; },
    };
}

// --- cometd --------------------------------------------------------------------------------------
async function cometdAdapter() {
    const {adapt} = await import("cometd-nodejs-client");
    adapt();   // installs window.XMLHttpRequest (with a cookie jar) and window.WebSocket (npm ws)
    for (const k of ["log", "info", "debug", "warn", "error"]) console[k] = toStderr;
    const {CometD} = await import("cometd");
    let cometd = null, state = null;
    const subs = new Map();   // channel -> subscription handle

    async function teardown() {
        if (!cometd) return;
        const cd = cometd, st = state;
        cometd = null; subs.clear();
        try {   // a polite /meta/disconnect only when there is a session to end
            if (cd.getClientId() && !cd.isDisconnected()) {
                await withTimeout(new Promise((r) => cd.disconnect(r)), 3, "disconnect");
            }
        } catch { /* best effort */ }
        st.dead = true;
        if (!cd.isDisconnected()) cd.disconnect();   // dropped by the extension; stops every retry locally
        try { cd.getTransport()?.abort(); } catch { /* already gone */ }
    }

    // Subscribes and resolves with the subscribe reply; the handle is recorded at once.
    function subscribe(cd, ch) {
        return new Promise((resolve) => {
            const handle = cd.subscribe(ch, (m) => onMessage(ch, m), (reply) => resolve({handle, reply}));
            subs.set(ch, handle);
        });
    }

    return {
        teardown,
        async connect(c) {
            const url = need(c, "url"), transport = need(c, "transport");
            await teardown();
            if (transport === "callback-polling" && c.jsonp_shim !== false) installJsonpShim();
            const st = state = {dead: false};
            const cd = cometd = new CometD();
            if (!cd.findTransport(transport)) throw new Error(`unknown transport ${transport}`);
            for (const t of cd.getTransportTypes()) if (t !== transport) cd.unregisterTransport(t);
            cd.configure({url, logLevel: DEBUG ? "debug" : "warn", ...(c.options || {})});
            cd.registerExtension("driver", {
                outgoing(m) {
                    if (st.dead) return null;   // returning null drops the message
                    if (m.channel === "/meta/handshake" && c.ext) m.ext = Object.assign({}, m.ext, c.ext);
                    return m;
                },
            });
            let first = true;
            for (const ch of ["/meta/handshake", "/meta/connect", "/meta/subscribe", "/meta/unsubscribe", "/meta/disconnect"]) {
                cd.addListener(ch, onMeta);
            }
            cd.addListener("/meta/handshake", (m) => {
                // A refused handshake (a server reply, or any failure of the first one) is final:
                // disconnect so that CometD does not re-handshake with backoff forever.
                if (!m.successful && (!m.failure || first)) { st.dead = true; cd.disconnect(); }
                if (m.successful && m.reestablish && c.resubscribe) {
                    for (const ch of [...subs.keys()]) subscribe(cd, ch).catch((e) => emit({event: "error", error: String(e)}));
                }
                first = false;
            });
            const reply = await withTimeout(new Promise((resolve) => cd.handshake(resolve)), secs(c), "handshake reply")
                .catch(async (e) => { if (cometd === cd) await teardown(); throw e; });
            if (!reply.successful) { if (cometd === cd) cometd = null; throw failure(errorOf(reply), reply); }
            return {clientId: reply.clientId, advice: reply.advice ?? null, reply: clean(reply)};
        },
        async subscribe(c) {
            const ch = need(c, "channel"), cd = live(cometd);
            if (subs.has(ch)) throw new Error(`already subscribed to ${ch} in this driver`);
            try {
                const {reply} = await withTimeout(subscribe(cd, ch), secs(c), "subscribe reply");
                return {reply: clean(succeeded(reply))};
            } catch (e) { subs.delete(ch); throw e; }
        },
        async unsubscribe(c) {
            const ch = need(c, "channel"), cd = live(cometd), handle = subs.get(ch);
            if (!handle) throw new Error(`not subscribed to ${ch}`);
            subs.delete(ch);
            const reply = await withTimeout(new Promise((r) => cd.unsubscribe(handle, r)), secs(c), "unsubscribe reply");
            return {reply: clean(succeeded(reply))};
        },
        async publish(c) {
            const ch = need(c, "channel"), cd = live(cometd);
            const reply = succeeded(await withTimeout(new Promise((r) => cd.publish(ch, c.data ?? null, r)), secs(c), "publish ack"));
            return {ack: clean(reply), ext: reply.ext ?? null};
        },
        // CometD's remoteCall() takes the target WITHOUT "/service" and prepends it itself;
        // its reply is the message with the same id that carries "data".
        async remote_call(c) {
            const ch = need(c, "channel"), cd = live(cometd), target = ch.replace(/^\/service(?=\/)/, "");
            const reply = succeeded(await withTimeout(new Promise((r) => cd.remoteCall(target, c.data ?? null, secs(c) * 1000, r)),
                secs(c) + 1, "remote call reply"));
            return {data: reply.data ?? null, ext: reply.ext ?? null, reply: clean(reply)};
        },
        async disconnect() { await teardown(); return {}; },
    };
}

// CometD's callback-polling transport loads JSONP through a browser <script> element
// (window.document), which cometd-nodejs-client does not provide. This shim plays the
// browser's part: GET the script URL and call the JSONP callback the response names.
function installJsonpShim() {
    if (globalThis.window.document) return;
    const head = {
        removeChild() {},
        appendChild(script) {
            let called = false;
            fetch(script.src).then(async (response) => {
                const body = await response.text();
                if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
                const wanted = new URL(script.src).searchParams.get("jsonp");
                const name = /^\s*(?:\/\*\*\/)?\s*([\w$.]+)\s*\(/.exec(body)?.[1];
                if (name !== wanted) throw new Error(`JSONP body calls ${name}, not ${wanted}`);
                const json = JSON.parse(body.slice(body.indexOf("(") + 1, body.lastIndexOf(")")));
                called = true;
                globalThis.window[name](json);
            }).catch((e) => { if (!called) script.onerror?.({type: `error (${e.message})`}); });
        },
    };
    globalThis.window.document = {getElementsByTagName: () => [head], createElement: () => ({})};
}

// --- main loop -----------------------------------------------------------------------------------
const COMMANDS = new Set(["connect", "subscribe", "unsubscribe", "publish", "remote_call", "disconnect"]);
process.on("uncaughtException", (e) => emit({event: "error", error: String(e?.stack ?? e)}));
process.on("unhandledRejection", (e) => emit({event: "error", error: String(e?.stack ?? e)}));

if (LIB !== "faye" && LIB !== "cometd") {
    process.stderr.write("usage: node driver.mjs faye|cometd\n");
    process.exit(2);
}
const adapter = LIB === "faye" ? await fayeAdapter() : await cometdAdapter();

async function handle(cmd) {
    const id = cmd?.id ?? null;
    try {
        if (!cmd || typeof cmd !== "object" || !COMMANDS.has(cmd.cmd)) throw new Error(`unknown cmd: ${JSON.stringify(cmd?.cmd)}`);
        const result = await adapter[cmd.cmd](cmd);
        emit({id, ok: true, ...result});
    } catch (e) {
        emit({id, ok: false, error: String(e?.message ?? e), ...(e?.extra || {})});
    }
}

const rl = readline.createInterface({input: process.stdin});
rl.on("line", (line) => {
    if (!line.trim()) return;
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) { return emit({id: null, ok: false, error: `bad json: ${e.message}`}); }
    handle(cmd);
});
rl.on("close", async () => {
    try { await withTimeout(adapter.teardown(), 4, "teardown"); } catch { /* exiting anyway */ }
    process.stdout.write("", () => process.exit(0));
});
emit({event: "ready", library: LIB});
