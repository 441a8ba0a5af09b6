/**
 * realtime.js: the browser client for realtime's WebSocket protocol (docs/protocol.md).
 *
 * A dependency-free ES module with no build step. Importing it touches no DOM and opens
 * nothing; it only defines the exports (and, in a browser, sets `window.Realtime` to the
 * same names, for page code that is not itself a module).
 *
 *     import {RealtimeClient} from "/static/realtime/realtime.js";
 *     const client = RealtimeClient.fromPage();        // <meta name="realtime" data-url ...>
 *     client.addEventListener("realtime:state", (e) => console.log(e.detail.state));
 *     const sub = client.subscribe("rooms/lobby", (message) => console.log(message.data));
 *     await client.connect();
 *     await client.publish("rooms/lobby", "chat", {text: "hi"});
 *
 * Requests (`publish`, `auth`, `logout`, `unsubscribe`) return promises that resolve with
 * the server's `{"ok": true}` reply (`rpc` resolves with the method's result), or reject
 * with a `RealtimeError` whose `code` is the
 * server's error code, or one of the client's own: "timeout" (no reply within
 * `requestTimeout` after the frame was sent), "disconnected" (the connection dropped
 * after the frame was sent: it may or may not have been carried out, so it is not resent),
 * "closed" (the client was closed, or the server refused it for good), and
 * "token_unavailable" (`tokenUrl` could not be fetched).
 *
 * Requests made while the client is not connected (before `connect()`, while it is
 * connecting, or while it waits to reconnect) are queued, and sent in order once the next
 * connection is open and authenticated and every subscription has been renewed. `close()`
 * rejects everything still pending with "closed", and requests made while closed are
 * rejected at once.
 *
 * A token whose authentication ends (the server's `auth` reply says `"expires"`, with
 * `REALTIME["TOKEN_SESSION_TTL"]`) is renewed before then on the live connection: the
 * client fetches a fresh one from `tokenUrl` and sends `{"refresh": {"token": ...}}`,
 * keeping its subscriptions (those the new token no longer covers end with the server's
 * `unsubscribed` notices). If that fails, the server logs the connection out
 * (`{"logout": {"reason": "token_expired"}}`) and it continues anonymously.
 *
 * After every reconnect the client authenticates again with the same credentials (with a
 * fresh token from `tokenUrl` when it has none, when it has expired, or when the server
 * refuses it) and subscribes again to every live subscription, in the order they were made.
 * It reconnects with exponential back-off and jitter, except after close codes 4002 (too
 * many failed auth attempts), 4003 (origin not allowed) and 4101 (an operator disconnected
 * it for good): retrying unchanged would fail again, so the client goes to "closed". After
 * 4100 (an operator disconnected it, asking it to come back) it reconnects as usual.
 *
 * The client says "connected" only once the server has answered on the new socket: the
 * `auth` reply, or without credentials the reply to one `{"ping": true}` (a server that
 * refuses the page's origin accepts the socket and closes it with 4003 at once). While
 * connected it sends `{"ping": true}` after `heartbeatInterval` ms without any frame; with
 * no frame at all within `heartbeatTimeout` ms after that, it drops the socket and reconnects.
 *
 * On channels with history, the client remembers the offset and epoch of the last
 * publication it saw on each channel (or where the stream stood when it subscribed), and
 * every renewal after a reconnect, or after a `missed` notice, subscribes with `since`:
 * the server replays what was published meanwhile, in order, before live ones, so nothing
 * is lost and nothing arrives twice. When it cannot (the epoch changed, the gap is too
 * old), the page gets a `missed` notice with reason "not_recovered" and should reload.
 * Pass `recover: false` to turn this off.
 *
 * Events (the client is an EventTarget; every event is a CustomEvent):
 *   realtime:state    detail {state, previous, code?, reason?, retryIn?}
 *   realtime:message  detail {channel, event, data, user?, offset?, epoch?}: every publication received
 *   realtime:notice   detail: the server's notice frame, {"unsubscribed": {...}}, {"logout": {...}},
 *                     {"missed": {...}}, {"join": {...}}, {"leave": {...}} or {"subscribed": {...}}
 *                     (the server API subscribed this connection; its publications arrive as
 *                     realtime:message events, and it is not renewed after a reconnect)
 *   realtime:transport detail {transport: "sse", code, reason}: no WebSocket could be opened, and
 *                     the client fell back to server-sent events (option `fallback: "sse"`)
 *   realtime:error    detail {error}: errors no promise can carry (a failed re-authentication
 *                     or re-subscription after a reconnect, a failed token refresh, an error
 *                     reply without an id)
 *   realtime:refresh  detail {expires}: the live connection's token was renewed (`refresh`)
 */

export const PROTOCOL_VERSION = 1;

/** The server's error codes (`realtime.errors.ErrorCode`). */
export const ERROR_CODES = Object.freeze({
  INVALID_DATA: "invalid_data",
  INVALID_CREDENTIALS: "invalid_credentials",
  ACCESS_DENIED: "access_denied",
  INVALID_CHANNEL_NAME: "invalid_channel_name",
  INVALID_CHANNEL: "invalid_channel",
  MESSAGE_TOO_LARGE: "message_too_large",
  TOO_MANY_SUBSCRIPTIONS: "too_many_subscriptions",
  ALREADY_AUTHENTICATED: "already_authenticated",
  RATE_LIMITED: "rate_limited",
  TOO_MANY_AUTH_FAILURES: "too_many_auth_failures",
  TOO_MANY_CONNECTIONS: "too_many_connections",
  HISTORY_DISABLED: "history_disabled",
  PRESENCE_DISABLED: "presence_disabled",
  UNAVAILABLE: "unavailable",
  UNKNOWN_OUTCOME: "unknown_outcome",
  INTERNAL_ERROR: "internal_error",
  METHOD_NOT_FOUND: "method_not_found",
  REJECTED: "rejected",
  HANDLER_TIMEOUT: "handler_timeout",
});

/** Codes for failures the client detects itself; they never come from the server. */
export const CLIENT_ERROR_CODES = Object.freeze({
  TIMEOUT: "timeout",
  DISCONNECTED: "disconnected",
  CLOSED: "closed",
  TOKEN_UNAVAILABLE: "token_unavailable",
});

/** WebSocket close codes the server uses (`realtime.errors.CloseCode`). */
export const CLOSE_CODES = Object.freeze({
  NORMAL: 1000,
  TOO_MANY_INVALID_FRAMES: 4001,
  TOO_MANY_AUTH_FAILURES: 4002,
  ORIGIN_NOT_ALLOWED: 4003,
  TOO_SLOW: 4004,
  UNAVAILABLE: 4005,
  STALE: 4006,
  TOO_MANY_CONNECTIONS: 4007,
  TOO_MANY_CONNECTIONS_FROM_ADDRESS: 4008,
  SHUTTING_DOWN: 4009,
  DISCONNECTED: 4100,
  DISCONNECTED_FOR_GOOD: 4101,
});

export const STATES = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  DISCONNECTED: "disconnected",
  CLOSED: "closed",
});

/** Close codes after which reconnecting unchanged would only fail again. */
const FINAL_CLOSE_CODES = new Set([
  CLOSE_CODES.TOO_MANY_AUTH_FAILURES,
  CLOSE_CODES.ORIGIN_NOT_ALLOWED,
  CLOSE_CODES.DISCONNECTED_FOR_GOOD,
]);
const OPEN = 1; // WebSocket.OPEN, spelled out so that injected implementations need not define it
const ABNORMAL = 1006; // the close code reported when the client itself gives up on a socket
const TOKEN_EXPIRY_MARGIN_MS = 5000;
// A token's authentication is renewed this long before it ends (at most a third of what is left).
const REFRESH_MARGIN_MS = 30000;

const DEFAULTS = Object.freeze({
  reconnect: Object.freeze({minDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5}),
  heartbeatInterval: 25000,
  heartbeatTimeout: 10000,
  requestTimeout: 10000,
  connectTimeout: 10000,
});

/** An error with a stable `code`: the server's error code, or one of CLIENT_ERROR_CODES. */
export class RealtimeError extends Error {
  constructor(code, detail = "", extra = {}) {
    super(detail ? `${code}: ${detail}` : code);
    this.name = "RealtimeError";
    this.code = code;
    this.detail = detail;
    Object.assign(this, extra);
  }
}

function deferred() {
  const result = {};
  result.promise = new Promise((resolve, reject) => Object.assign(result, {resolve, reject}));
  return result;
}

function report(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error(error);
}

/** The URL beside the WebSocket's: `/realtime/ws` -> `/realtime/sse` or `/realtime/api/publish`. */
function siblingUrl(wsUrl, path) {
  const parsed = new URL(wsUrl);
  parsed.protocol = parsed.protocol === "wss:" ? "https:" : "http:";
  parsed.pathname = parsed.pathname.endsWith("/ws") ? parsed.pathname.slice(0, -3) + path : `/realtime${path}`;
  parsed.search = "";
  return parsed.href;
}

function absoluteUrl(url) {
  const base = globalThis.location?.href;
  return base ? new URL(url, base).href : new URL(url).href;
}

function toWebSocketUrl(url) {
  const base = globalThis.location?.href;
  const parsed = base ? new URL(url, base) : new URL(url);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  return parsed.href;
}

/** Normalise the credentials given to the constructor or to auth(); null means anonymous. */
function credentialsFrom(given, tokenUrl) {
  if (!given) return null;
  if (given.secret) return {secret: given.secret, access: given.access};
  if (given.token || given.tokenUrl || tokenUrl) {
    return {
      token: given.token || null,
      expires: typeof given.expires === "number" && Number.isFinite(given.expires) ? given.expires : null,
      tokenUrl: given.tokenUrl || tokenUrl || null,
      access: given.access,
    };
  }
  return null;
}

function tokenIsStale(credentials) {
  if (!credentials.token) return true;
  return credentials.expires !== null && Date.now() >= credentials.expires * 1000 - TOKEN_EXPIRY_MARGIN_MS;
}

/** One reader of one channel. Several may share a channel; the server sees one subscription. */
export class Subscription {
  constructor(client, channel, onMessage, options = {}) {
    this.channel = channel;
    this.onMessage = onMessage ?? null;
    this.onUnsubscribed = options.onUnsubscribed ?? null;
    /** False once unsubscribed, by you or by the server. */
    this.active = true;
    /** True once the server said the channel bubbles: publications below it arrive here too. */
    this.bubble = false;
    this._client = client;
    this._settled = false;
    const ready = deferred();
    this._ready = ready;
    /** Resolves when the server first confirms the subscription; rejects if it refuses it. */
    this.ready = ready.promise;
    this.ready.catch(() => {}); // an unobserved refusal is reported by the events, not as unhandled
  }

  unsubscribe() {
    return this._client._unsubscribe(this);
  }

  _confirm() {
    if (!this._settled) {
      this._settled = true;
      this._ready.resolve(this);
    }
  }

  _fail(error) {
    if (!this._settled) {
      this._settled = true;
      this._ready.reject(error);
      return true;
    }
    return false;
  }
}

/**
 * Whether a subscription (a channel name, or a pattern ending in `*` or `**`) covers the
 * channel a publication was made on: `rooms/*` covers `rooms/42`, `rooms/**` covers
 * `rooms/42/typing`, a bare `**` covers every channel.
 */
export function channelMatches(subscription, channel) {
  if (subscription === channel) return true;
  const cut = subscription.lastIndexOf("/");
  const last = subscription.slice(cut + 1);
  if (last !== "*" && last !== "**") return false;
  const prefix = cut < 0 ? "" : subscription.slice(0, cut + 1);
  if (!channel.startsWith(prefix)) return false;
  const rest = channel.slice(prefix.length);
  return rest !== "" && (last === "**" || !rest.includes("/"));
}

export class RealtimeClient extends EventTarget {
  /**
   * @param {string} [url] ws://, wss://, http(s):// or a path (resolved against the page).
   * @param {object} [options] see realtime.d.ts.
   */
  constructor(url = "/realtime/ws", options = {}) {
    super();
    this.url = toWebSocketUrl(url);
    const reconnect = options.reconnect === false ? false : {...DEFAULTS.reconnect, ...options.reconnect};
    this.options = {...DEFAULTS, ...options, reconnect};
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? (globalThis.fetch ? (...args) => globalThis.fetch(...args) : null);
    this._EventSource = options.EventSource ?? globalThis.EventSource;
    this._sseUrl = options.sseUrl ? absoluteUrl(options.sseUrl) : siblingUrl(this.url, "/sse");
    this._publishUrl = options.publishUrl ? absoluteUrl(options.publishUrl) : siblingUrl(this.url, "/api/publish");
    this._sse = null; // the EventSource, on the SSE fallback
    this._onSse = false; // fell back to SSE: for the rest of this client's life (until close())
    this._wsOpened = false; // a WebSocket of this client ever opened
    this._wsFailures = 0;
    this._sseTimer = null;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("realtime: no WebSocket implementation; pass options.WebSocket");
    }
    this._credentials = credentialsFrom(options, options.tokenUrl);
    this._state = STATES.IDLE;
    this.authenticated = false;
    this._ws = null;
    this._ready = false; // open, authenticated (or anonymous) and subscriptions renewed
    this._generation = 0; // bumped by close(): stale async work checks it and stops
    this._nextId = 0;
    this._inflight = new Map();
    this._pings = new Set();
    this._queue = [];
    this._subscriptions = [];
    // Channel -> {offset, epoch}: the last publication seen, for recovery after a reconnect.
    this._positions = new Map();
    this._failures = 0;
    this._connectWaiters = [];
    this._authWaiters = [];
    this._timers = {reconnect: null, heartbeat: null, connect: null, refresh: null};
    this._dormant = false; // closed as stale (4006) with nothing to hold: reopen when used
  }

  /** Build a client from `<meta name="realtime" data-url data-token data-token-url data-expires>`. */
  static fromPage(root = globalThis.document, options = {}) {
    const meta = root?.querySelector?.('meta[name="realtime"]');
    if (!meta) throw new Error('realtime: no <meta name="realtime"> element; add {% realtime %} to the page');
    const data = meta.dataset;
    const page = {};
    if (data.token) page.token = data.token;
    if (data.tokenUrl) page.tokenUrl = data.tokenUrl;
    if (data.expires) page.expires = Number(data.expires);
    return new RealtimeClient(data.url || "/realtime/ws", {...page, ...options});
  }

  get state() {
    return this._state;
  }

  /** "websocket", or "sse" once the client fell back to server-sent events (`fallback: "sse"`). */
  get transport() {
    return this._onSse ? "sse" : "websocket";
  }

  /** Open the connection. Resolves once connected and, with credentials, authenticated. */
  connect() {
    if (this._ready) return Promise.resolve();
    const waiter = deferred();
    this._connectWaiters.push(waiter);
    if (this._state === STATES.IDLE || this._state === STATES.CLOSED) {
      this._open();
    } else if (this._timers.reconnect !== null) {
      this._clearTimer("reconnect");
      this._open();
    } else {
      this._wake();
    }
    return waiter.promise;
  }

  /** Say goodbye to the server, stop reconnecting, reject everything pending with "closed". */
  close() {
    if (this._state === STATES.CLOSED) return;
    this._closeSse();
    const ws = this._ws;
    if (ws) {
      this._detach(ws);
      try {
        if (ws.readyState === OPEN) ws.send('{"disconnect":true}');
        ws.close(CLOSE_CODES.NORMAL);
      } catch {
        // the socket is gone already
      }
    }
    this._shutdown(CLOSE_CODES.NORMAL, "closed by the client");
  }

  /**
   * Read `channel`. `onMessage(message, subscription)` is called for each publication.
   * `options.onUnsubscribed({channel, reason}, subscription)` is called when the server ends it.
   */
  subscribe(channel, onMessage, options = {}) {
    if (typeof channel !== "string") throw new TypeError("realtime: channel must be a string");
    const subscription = new Subscription(this, channel, onMessage, options);
    this._subscriptions.push(subscription);
    if (this._state === STATES.CLOSED) subscription._fail(this._closedError());
    else if (this._ready) this._renew(channel, [subscription]);
    else this._wake();
    return subscription;
  }

  /**
   * Publish `data` as `event`. With `options.idempotencyKey` (a UUID, say), a retry after
   * an "unknown_outcome" error with the same key gets the first publication's outcome and
   * delivers nothing twice; "unavailable" means it was not delivered and never will be.
   */
  publish(channel, event, data = null, options = {}) {
    const body = {channel, event, data: data === undefined ? null : data};
    if (options.idempotencyKey != null) body.idempotency_key = options.idempotencyKey;
    return this._request("publish", body);
  }

  /**
   * Stored publications on `channel` after offset `since`: resolves with the reply's
   * `history` object ({channel, offset, epoch, complete, next, publications}).
   */
  history(channel, {since = 0, limit, epoch} = {}) {
    const body = {channel, since};
    if (limit !== undefined) body.limit = limit;
    if (epoch !== undefined) body.epoch = epoch;
    return this._request("history", body).then((reply) => reply.history);
  }

  /**
   * Call the server method `method` (registered with `@realtime.rpc.method`) with `data`:
   * resolves with its result, or rejects with its error (`method_not_found`,
   * `access_denied`, `invalid_data`, `rejected`, `handler_timeout`, a project's own code...).
   */
  rpc(method, data = null) {
    if (typeof method !== "string") return Promise.reject(new TypeError("realtime: method must be a string"));
    return this._request("rpc", {method, data: data === undefined ? null : data}).then((reply) => reply.result);
  }

  /** Who is subscribed to `channel`: resolves with [{user, clients}, ...]. */
  presence(channel) {
    return this._request("presence", {channel}).then((reply) => reply.presence.members);
  }

  /** The server's clock: resolves with Unix seconds (a float). */
  time() {
    return this._request("time", true).then((reply) => reply.time);
  }

  /** The last {offset, epoch} seen on `channel` (a channel with history), or undefined. */
  position(channel) {
    const known = this._positions.get(channel);
    return known ? {...known} : undefined;
  }

  /**
   * Authenticate with `{token}`, `{secret, access?}` or `{tokenUrl}`; with no argument, use
   * the configured `tokenUrl`. The credentials are kept and used again after every reconnect.
   * Before the connection is ready, the promise settles with the next connection's auth.
   */
  auth(credentials) {
    if (this._state === STATES.CLOSED) return Promise.reject(this._closedError());
    const normalised = credentialsFrom(credentials ?? {}, this.options.tokenUrl);
    if (!normalised) {
      return Promise.reject(new TypeError("realtime: auth() needs {token}, {secret} or a tokenUrl"));
    }
    this._credentials = normalised;
    if (this._onSse) {
      this._sseChanged(); // the stream opens again with the new token
      return Promise.resolve({ok: true});
    }
    if (this._ready) return this._authenticate(this._ws, normalised);
    const waiter = deferred();
    this._authWaiters.push(waiter);
    this._wake();
    return waiter.promise;
  }

  /** Drop the authentication. The server ends every subscription too (reason "logout"). */
  logout() {
    this._credentials = null;
    this.authenticated = false;
    this._clearTimer("refresh");
    this._endSubscriptions(this._subscriptions.slice(), "logout");
    if (this._onSse) {
      this._sseChanged();
      return Promise.resolve({ok: true});
    }
    if (!this._ready) return Promise.resolve(null); // the next connection starts anonymous
    return this._request("logout", true);
  }

  /** The live subscriptions, in the order they were made. */
  get subscriptions() {
    return this._subscriptions.slice();
  }

  // Connection ----------------------------------------------------------------------

  _open() {
    if (this._onSse) {
      this._openSse();
      return;
    }
    this._setState(STATES.CONNECTING);
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (error) {
      this._shutdown(null, `cannot open ${this.url}: ${error.message}`);
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      this._wsOpened = true;
      this._onOpen(ws);
    };
    ws.onmessage = (event) => this._onFrame(ws, event.data);
    ws.onclose = (event) => ws === this._ws && this._lost(event.code, event.reason);
    ws.onerror = () => {}; // a close event follows
    this._timers.connect = setTimeout(() => this._drop(ws, "connect timeout"), this.options.connectTimeout);
  }

  async _onOpen(ws) {
    if (ws !== this._ws) return;
    this._clearTimer("connect");
    this._armHeartbeat();
    const credentials = this._credentials;
    let authError = null;
    let answered = false;
    if (credentials) {
      try {
        answered = (await this._authenticate(ws, credentials)) !== null;
      } catch (error) {
        if (ws !== this._ws) return;
        if (error.code !== ERROR_CODES.INVALID_CREDENTIALS) {
          // Transient (timeout, rate_limited, token_unavailable...): try a fresh connection.
          this._emitError(error);
          this._drop(ws, `authentication failed: ${error.code}`);
          return;
        }
        authError = error; // stay connected, anonymously; retrying would not help
        answered = true;
      }
      if (ws !== this._ws) return;
    }
    if (!answered) {
      // Hear from the server before saying "connected": a server that refuses the origin
      // accepts the handshake and closes at once (4003), and this is how the client learns.
      try {
        await this._call(ws, "ping", true);
      } catch (error) {
        if (ws !== this._ws) return;
        if (Object.values(CLIENT_ERROR_CODES).includes(error.code)) {
          this._drop(ws, `no answer: ${error.code}`);
          return;
        }
        // Any error reply (a server without ping says invalid_data) still proves it alive.
      }
    }
    this._ready = true;
    this._failures = 0;
    // Renew subscriptions, then send what was queued, before anyone hears "connected":
    // a request made in a state listener goes out after them.
    const channels = [...new Set(this._subscriptions.map((subscription) => subscription.channel))];
    for (const channel of channels) {
      this._renew(
        channel,
        this._subscriptions.filter((subscription) => subscription.channel === channel),
      );
    }
    for (const request of this._queue.splice(0)) this._transmit(request);
    const connectWaiters = this._connectWaiters.splice(0);
    const authWaiters = this._authWaiters.splice(0);
    this._setState(STATES.CONNECTED);
    for (const waiter of connectWaiters) {
      if (authError) waiter.reject(authError);
      else waiter.resolve();
    }
    for (const waiter of authWaiters) {
      if (authError) waiter.reject(authError);
      else waiter.resolve({ok: true});
    }
    if (authError) this._emitError(authError);
  }

  async _authenticate(ws, credentials) {
    if (credentials.secret) {
      const reply = await this._call(ws, "auth", {secret: credentials.secret, access: credentials.access});
      this.authenticated = true;
      return reply;
    }
    let fresh = false;
    if (tokenIsStale(credentials)) {
      if (!(await this._fetchToken(credentials))) return null; // no token for this user: anonymous
      fresh = true;
    }
    const body = () => ({token: credentials.token, access: credentials.access});
    let reply;
    try {
      reply = await this._call(ws, "auth", body());
    } catch (error) {
      if (error.code !== ERROR_CODES.INVALID_CREDENTIALS || !credentials.tokenUrl || fresh) throw error;
      if (!(await this._fetchToken(credentials))) throw error;
      reply = await this._call(ws, "auth", body());
    }
    this.authenticated = true;
    this._scheduleRefresh(ws, credentials, reply);
    return reply;
  }

  /** After an `auth` or `refresh` reply that says when the authentication ends, renew it before. */
  _scheduleRefresh(ws, credentials, reply) {
    this._clearTimer("refresh");
    if (typeof reply?.expires !== "number" || !credentials.tokenUrl) return;
    const left = reply.expires * 1000 - Date.now();
    const delay = Math.max(0, left - Math.min(REFRESH_MARGIN_MS, left / 3));
    this._timers.refresh = setTimeout(() => {
      this._timers.refresh = null;
      this._refresh(ws, credentials).catch((error) => {
        // The connection stays as it is; when the authentication ends, the server says so.
        if (ws === this._ws) this._emitError(error);
      });
    }, delay);
  }

  /** Fetch a fresh token and renew the live connection's authentication with it. */
  async _refresh(ws, credentials) {
    if (ws !== this._ws || this._credentials !== credentials) return;
    if (!(await this._fetchToken(credentials))) {
      throw new RealtimeError(CLIENT_ERROR_CODES.TOKEN_UNAVAILABLE, "the token endpoint gives this user no token");
    }
    if (ws !== this._ws || this._credentials !== credentials) return;
    const reply = await this._call(ws, "refresh", {token: credentials.token, access: credentials.access});
    this._scheduleRefresh(ws, credentials, reply);
    this._emit("realtime:refresh", {expires: reply.expires ?? null});
  }

  /** Fetch a token into `credentials`. False when the server gives this user none (401/403). */
  async _fetchToken(credentials) {
    if (!credentials.tokenUrl || !this._fetch) {
      throw new RealtimeError(CLIENT_ERROR_CODES.TOKEN_UNAVAILABLE, "no token and no tokenUrl to fetch one");
    }
    const generation = this._generation;
    let response;
    let body;
    try {
      response = await this._fetch(credentials.tokenUrl, {
        credentials: "same-origin",
        cache: "no-store",
        headers: {Accept: "application/json"},
      });
      if (response.status === 401 || response.status === 403) {
        credentials.token = null;
        return false;
      }
      if (!response.ok) throw new Error(`${credentials.tokenUrl} answered ${response.status}`);
      body = await response.json();
    } catch (error) {
      throw new RealtimeError(CLIENT_ERROR_CODES.TOKEN_UNAVAILABLE, error?.message ?? String(error));
    }
    if (generation !== this._generation) throw this._closedError();
    if (typeof body?.token !== "string" || !body.token) {
      throw new RealtimeError(CLIENT_ERROR_CODES.TOKEN_UNAVAILABLE, `${credentials.tokenUrl} gave no token`);
    }
    credentials.token = body.token;
    credentials.expires = typeof body.expires === "number" ? body.expires : null;
    return true;
  }

  /** Forget a socket that is still open but no longer trusted, and carry on as if it closed. */
  _drop(ws, reason) {
    if (ws !== this._ws) return;
    this._detach(ws);
    try {
      ws.close();
    } catch {
      // closing a socket that never opened may throw in some implementations
    }
    this._lost(ABNORMAL, reason);
  }

  /** Reopen a connection left closed after a stale close (4006), now that it is needed. */
  _wake() {
    if (!this._dormant) return;
    this._dormant = false;
    this._open();
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  _lost(code, reason = "") {
    this._ws = null;
    this._ready = false;
    this.authenticated = false;
    this._pings.clear();
    this._clearTimer("connect");
    this._clearTimer("heartbeat");
    this._clearTimer("refresh");
    if (this._shouldFallBack()) {
      this._onSse = true;
      this._emit("realtime:transport", {transport: "sse", code, reason});
      this._openSse();
      return;
    }
    if (FINAL_CLOSE_CODES.has(code) || this.options.reconnect === false) {
      this._shutdown(code, reason);
      return;
    }
    const error = new RealtimeError(
      CLIENT_ERROR_CODES.DISCONNECTED,
      reason || `the connection closed (${code})`,
      {closeCode: code},
    );
    this._rejectInflight(error);
    if (code === CLOSE_CODES.STALE && !this._credentials && this._subscriptions.length === 0) {
      // The server closes connections that hold nothing (STALE_TIMEOUT). Reconnecting
      // would only be closed again: wait until something needs the connection.
      this._dormant = true;
      this._setState(STATES.DISCONNECTED, {code, reason});
      return;
    }
    const {minDelay, maxDelay, factor, jitter} = this.options.reconnect;
    const delay = Math.round(Math.min(maxDelay, minDelay * factor ** this._failures) * (1 - jitter * Math.random()));
    this._failures += 1;
    this._setState(STATES.DISCONNECTED, {code, reason, retryIn: delay});
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this._open();
    }, delay);
  }

  _shutdown(code, reason) {
    this._generation += 1;
    this._dormant = false;
    this._closeSse();
    this._ws = null;
    this._ready = false;
    this.authenticated = false;
    this._pings.clear();
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    const error = this._closedError(reason, code);
    this._rejectInflight(error);
    for (const request of this._queue.splice(0)) request.reject(error);
    for (const waiter of this._connectWaiters.splice(0)) waiter.reject(error);
    for (const waiter of this._authWaiters.splice(0)) waiter.reject(error);
    for (const subscription of this._subscriptions) subscription._fail(error);
    this._setState(STATES.CLOSED, {code, reason});
  }

  _armHeartbeat() {
    this._clearTimer("heartbeat");
    const {heartbeatInterval, heartbeatTimeout} = this.options;
    if (!(heartbeatInterval > 0)) return;
    const ws = this._ws;
    this._timers.heartbeat = setTimeout(() => {
      if (ws !== this._ws) return;
      const id = ++this._nextId;
      this._pings.add(id);
      try {
        ws.send(JSON.stringify({ping: true, id}));
      } catch {
        // a socket that cannot send is dead: the timeout below finds out
      }
      this._timers.heartbeat = setTimeout(() => this._drop(ws, "heartbeat timeout"), heartbeatTimeout);
    }, heartbeatInterval);
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _setState(state, extra = {}) {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this._emit("realtime:state", {state, previous, ...extra});
  }

  _emit(type, detail) {
    let event;
    if (typeof CustomEvent === "function") {
      event = new CustomEvent(type, {detail});
    } else {
      event = new Event(type);
      Object.defineProperty(event, "detail", {value: detail});
    }
    this.dispatchEvent(event);
  }

  _emitError(error) {
    this._emit("realtime:error", {error});
  }

  _closedError(reason = "the client is closed", code = null) {
    return new RealtimeError(CLIENT_ERROR_CODES.CLOSED, reason, {closeCode: code});
  }

  // Requests ------------------------------------------------------------------------

  /** Send now if the connection is ready, else queue for the next one. */
  _request(command, body) {
    if (this._state === STATES.CLOSED) return Promise.reject(this._closedError());
    let request;
    try {
      request = {command, body: JSON.stringify(body), ...deferred()};
    } catch (error) {
      return Promise.reject(error); // data that is not JSON (a BigInt, a cycle)
    }
    if (this._ready) this._onSse ? this._transmitHttp(request) : this._transmit(request);
    else {
      this._queue.push(request);
      this._wake();
    }
    return request.promise;
  }

  /** Send on `ws` now, whatever the readiness: for the handshake's own requests. */
  _call(ws, command, body) {
    if (ws !== this._ws) {
      return Promise.reject(new RealtimeError(CLIENT_ERROR_CODES.DISCONNECTED, "the connection closed"));
    }
    const request = {command, body: JSON.stringify(body), ...deferred()};
    this._transmit(request);
    return request.promise;
  }

  _transmit(request) {
    const id = ++this._nextId;
    this._inflight.set(id, request);
    request.timer = setTimeout(() => {
      if (this._inflight.delete(id)) {
        request.reject(
          new RealtimeError(CLIENT_ERROR_CODES.TIMEOUT, `no reply within ${this.options.requestTimeout} ms`),
        );
      }
    }, this.options.requestTimeout);
    try {
      this._ws.send(`{"${request.command}":${request.body},"id":${id}}`);
    } catch (error) {
      this._inflight.delete(id);
      clearTimeout(request.timer);
      request.reject(new RealtimeError(CLIENT_ERROR_CODES.DISCONNECTED, error.message));
    }
  }

  _rejectInflight(error) {
    for (const request of this._inflight.values()) {
      clearTimeout(request.timer);
      request.reject(error);
    }
    this._inflight.clear();
  }

  // Frames --------------------------------------------------------------------------

  _onFrame(ws, text) {
    if (ws !== this._ws) return;
    this._armHeartbeat(); // any frame proves the connection alive
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this._emitError(new RealtimeError(ERROR_CODES.INVALID_DATA, "the server sent a frame that is not JSON"));
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if ("ok" in frame || "err" in frame) this._onReply(frame);
    else if (frame.message) this._onPublication(frame.message);
    else if (frame.unsubscribed) this._onUnsubscribedNotice(frame);
    else if (frame.logout) this._onLogoutNotice(frame);
    // The subscription stays, but publications may have been lost: recover them where the
    // channel has history, otherwise the page learns of it.
    else if (frame.missed) this._onMissed(frame);
    else if (frame.join || frame.leave) this._emit("realtime:notice", frame);
    else if (frame.subscribed) this._onSubscribedNotice(frame);
    // Anything else is from a later protocol version: ignored, as the protocol asks.
  }

  _onReply(frame) {
    const id = frame.id;
    if (this._pings.delete(id)) return;
    const request = id === undefined ? undefined : this._inflight.get(id);
    if (request === undefined) {
      // No id: the server could not read the frame far enough. A late reply to a request
      // that timed out is dropped.
      if ("err" in frame && id === undefined) {
        this._emitError(new RealtimeError(frame.err, frame.detail ?? "", {frame}));
      }
      return;
    }
    this._inflight.delete(id);
    clearTimeout(request.timer);
    if (frame.ok === true) request.resolve(frame);
    else request.reject(new RealtimeError(frame.err ?? ERROR_CODES.INTERNAL_ERROR, frame.detail ?? "", {frame}));
  }

  _onPublication(message) {
    if (typeof message.offset === "number") {
      const known = this._positions.get(message.channel);
      // Never twice: a publication at or before the position was already seen.
      if (known && known.epoch === message.epoch && message.offset <= known.offset) return;
      this._positions.set(message.channel, {offset: message.offset, epoch: message.epoch});
    }
    this._emit("realtime:message", message);
    for (const subscription of this._subscriptions) {
      if (!subscription.onMessage) continue;
      const below = subscription.bubble && message.channel.startsWith(`${subscription.channel}/`);
      if (!below && !channelMatches(subscription.channel, message.channel)) continue;
      try {
        subscription.onMessage(message, subscription);
      } catch (error) {
        report(error);
      }
    }
  }

  _onUnsubscribedNotice(frame) {
    const {channel, reason} = frame.unsubscribed;
    this._endSubscriptions(
      this._subscriptions.filter((subscription) => subscription.channel === channel),
      reason,
    );
    this._emit("realtime:notice", frame);
  }

  _onSubscribedNotice(frame) {
    // Subscribed by the server: remember where the stream stands, so that what follows
    // is judged like any other publication (never twice).
    const {channel, offset, epoch} = frame.subscribed;
    if (typeof offset === "number" && typeof channel === "string") this._positions.set(channel, {offset, epoch});
    this._emit("realtime:notice", frame);
  }

  _onLogoutNotice(frame) {
    // The key or token stopped working: do not present it again after a reconnect. A token
    // that ran out is fetched afresh from tokenUrl on the next auth() or reconnect instead.
    const expired = frame.logout.reason === "token_expired" && this._credentials?.tokenUrl;
    if (expired) this._credentials.token = null;
    else this._credentials = null;
    this.authenticated = false;
    this._clearTimer("refresh");
    this._endSubscriptions(this._subscriptions.slice(), frame.logout.reason);
    this._emit("realtime:notice", frame);
  }

  // Subscriptions -------------------------------------------------------------------

  _onMissed(frame) {
    const channel = frame.missed.channel;
    if (this.options.recover !== false && this._positions.has(channel) && this._ready) {
      const live = this._subscriptions.filter((subscription) => subscription.channel === channel);
      if (live.length) {
        // Subscribing again with `since` replays what the broker outage lost.
        this._request("unsubscribe", {channel}).catch(() => {});
        this._renew(channel, live);
        return;
      }
    }
    this._emit("realtime:notice", frame);
  }

  /** Subscribe on the server for `subscriptions` (all on `channel`), recovering if it can. */
  _renew(channel, subscriptions, attempt = 0) {
    if (this._onSse) {
      this._sseChanged();
      return;
    }
    const body = {channel};
    const since = this.options.recover === false ? undefined : this._positions.get(channel);
    if (since) body.since = {offset: since.offset, epoch: since.epoch};
    this._request("subscribe", body).then(
      (reply) => {
        if (typeof reply.offset === "number") {
          const known = this._positions.get(channel);
          if (!known || known.epoch !== reply.epoch || (since && reply.recovered === false)) {
            this._positions.set(channel, {offset: reply.offset, epoch: reply.epoch});
          }
        }
        if (since && reply.recovered === false) {
          this._emit("realtime:notice", {missed: {channel, reason: "not_recovered"}});
        }
        for (const subscription of subscriptions) {
          subscription.bubble = reply.bubble === true;
          subscription._confirm();
        }
      },
      (error) => {
        // A dropped connection renews every live subscription on the next one.
        if (error.code === CLIENT_ERROR_CODES.DISCONNECTED || error.code === CLIENT_ERROR_CODES.CLOSED) return;
        const live = subscriptions.filter((subscription) => subscription.active);
        // Redis is briefly away (a restart, a failover): a renewal of confirmed subscriptions
        // tries again, with the reconnect back-off, rather than ending them and losing what
        // recovery would replay.
        if (error.code === ERROR_CODES.UNAVAILABLE && live.length && live.every((s) => s._settled)) {
          const {minDelay, maxDelay, factor} = {...DEFAULTS.reconnect, ...(this.options.reconnect || {})};
          setTimeout(() => {
            const still = live.filter((subscription) => subscription.active);
            if (still.length && this._ready) this._renew(channel, still, attempt + 1);
          }, Math.min(maxDelay, minDelay * factor ** attempt));
          return;
        }
        this._remove(live);
        for (const subscription of live) {
          // A first refusal rejects `ready`; a refused renewal is reported as an ended subscription.
          if (!subscription._fail(error)) {
            this._callUnsubscribed(subscription, {channel, reason: error.code});
            this._emitError(error);
          }
        }
      },
    );
  }

  _unsubscribe(subscription) {
    if (!subscription.active) return Promise.resolve();
    this._remove([subscription]);
    subscription._fail(new RealtimeError(CLIENT_ERROR_CODES.CLOSED, "unsubscribed before it was ready"));
    const channel = subscription.channel;
    if (this._onSse) {
      this._sseChanged();
      return Promise.resolve();
    }
    if (!this._ready || this._subscriptions.some((other) => other.channel === channel)) {
      return Promise.resolve();
    }
    return this._request("unsubscribe", {channel}).then(
      () => undefined,
      (error) => {
        // A new connection starts with no subscriptions: the unsubscribe is done anyway.
        if (error.code !== CLIENT_ERROR_CODES.DISCONNECTED) throw error;
      },
    );
  }

  _remove(subscriptions) {
    for (const subscription of subscriptions) subscription.active = false;
    this._subscriptions = this._subscriptions.filter((subscription) => subscription.active);
  }

  _endSubscriptions(subscriptions, reason) {
    this._remove(subscriptions);
    for (const subscription of subscriptions) {
      subscription._fail(new RealtimeError(CLIENT_ERROR_CODES.CLOSED, `unsubscribed: ${reason}`));
      this._callUnsubscribed(subscription, {channel: subscription.channel, reason});
    }
  }

  // The SSE fallback: receive over EventSource, publish over HTTP ---------------------

  _shouldFallBack() {
    if (this.options.fallback !== "sse" || this._onSse || this._wsOpened) return false;
    if (typeof this._EventSource !== "function") return false;
    this._wsFailures += 1;
    return this._wsFailures >= (this.options.fallbackAfter ?? 1);
  }

  /** Open the stream again soon (the channels or the credentials changed). */
  _sseChanged() {
    if (this._sseTimer !== null) return;
    this._sseTimer = setTimeout(() => {
      this._sseTimer = null;
      if (this._onSse && this._state !== STATES.CLOSED && this._timers.reconnect === null) this._openSse();
    }, 0);
  }

  _closeSse() {
    if (this._sse) {
      this._sse.close();
      this._sse = null;
    }
  }

  async _openSse() {
    if (!this._ready) this._setState(STATES.CONNECTING);
    const generation = this._generation;
    const credentials = this._credentials;
    let token = null;
    if (credentials?.secret) {
      this._emitError(new RealtimeError(CLIENT_ERROR_CODES.TOKEN_UNAVAILABLE, "the SSE fallback takes tokens, not secrets"));
    } else if (credentials) {
      try {
        if (tokenIsStale(credentials)) await this._fetchToken(credentials);
        token = credentials.token;
      } catch (error) {
        this._emitError(error);
      }
    }
    if (generation !== this._generation || !this._onSse) return;
    this.authenticated = Boolean(token);
    this._closeSse();
    const channels = [...new Set(this._subscriptions.map((subscription) => subscription.channel))];
    if (!channels.length) {
      this._sseReady(); // nothing to read yet: publishing works all the same
      return;
    }
    const url = new URL(this._sseUrl);
    for (const channel of channels) url.searchParams.append("channel", channel);
    if (token) url.searchParams.set("token", token);
    url.searchParams.set("named", "0"); // every publication reaches onmessage
    if (this.options.recover !== false) {
      const known = channels.filter((channel) => this._positions.has(channel)).map((channel) => {
        const {offset, epoch} = this._positions.get(channel);
        return `${channel}=${epoch}:${offset}`;
      });
      if (known.length) url.searchParams.set("lastEventId", known.join(","));
    }
    const source = new this._EventSource(url.href);
    this._sse = source;
    const on = (name, handler) =>
      source.addEventListener(name, (event) => source === this._sse && handler(JSON.parse(event.data)));
    source.onmessage = (event) => source === this._sse && this._onPublication(JSON.parse(event.data));
    on("realtime:subscribed", (reply) => this._onSseSubscribed(reply));
    on("realtime:unsubscribed", (notice) => this._onUnsubscribedNotice({unsubscribed: notice}));
    on("realtime:logout", (notice) => this._onLogoutNotice({logout: notice}));
    for (const kind of ["missed", "join", "leave"]) {
      on(`realtime:${kind}`, (notice) => this._emit("realtime:notice", {[kind]: notice}));
    }
    source.onopen = () => source === this._sse && this._sseReady();
    source.onerror = () => {
      if (source !== this._sse) return;
      if (source.readyState === 2) {
        // Refused (an error status) or gone for good: try again with a back-off.
        this._sse = null;
        this._lost(ABNORMAL, "the event stream was refused");
      } else {
        // The browser reconnects by itself, with Last-Event-ID.
        this._ready = false;
        this._setState(STATES.DISCONNECTED, {code: ABNORMAL, reason: "the event stream dropped"});
      }
    };
  }

  _onSseSubscribed(reply) {
    if (typeof reply.offset === "number") {
      const known = this._positions.get(reply.channel);
      if (!known || known.epoch !== reply.epoch || reply.recovered === false) {
        this._positions.set(reply.channel, {offset: reply.offset, epoch: reply.epoch});
      }
    }
    for (const subscription of this._subscriptions) {
      if (subscription.channel !== reply.channel) continue;
      subscription.bubble = reply.bubble === true;
      subscription._confirm();
    }
  }

  _sseReady() {
    const wasReady = this._ready;
    this._ready = true;
    this._failures = 0;
    for (const request of this._queue.splice(0)) this._transmitHttp(request);
    const connectWaiters = this._connectWaiters.splice(0);
    const authWaiters = this._authWaiters.splice(0);
    if (!wasReady || this._state !== STATES.CONNECTED) this._setState(STATES.CONNECTED);
    for (const waiter of connectWaiters) waiter.resolve();
    for (const waiter of authWaiters) waiter.resolve({ok: true});
  }

  /** A request over HTTP: `publish` goes to the publish endpoint; the rest need the socket. */
  async _transmitHttp(request) {
    if (request.command !== "publish") {
      request.reject(
        new RealtimeError(ERROR_CODES.UNAVAILABLE, `${request.command} is not available over the SSE fallback`),
      );
      return;
    }
    const headers = {"Content-Type": "application/json", Accept: "application/json"};
    try {
      const credentials = this._credentials;
      if (credentials?.tokenUrl && tokenIsStale(credentials)) await this._fetchToken(credentials);
      if (credentials?.token) headers.Authorization = `Bearer ${credentials.token}`;
      const response = await this._fetch(this._publishUrl, {
        method: "POST",
        headers,
        body: request.body,
        credentials: "same-origin",
        cache: "no-store",
      });
      const reply = await response.json().catch(() => ({}));
      if (response.ok && reply.ok === true) request.resolve(reply);
      else request.reject(new RealtimeError(reply.err ?? ERROR_CODES.INTERNAL_ERROR, reply.detail ?? "", {frame: reply}));
    } catch (error) {
      if (error instanceof RealtimeError) request.reject(error);
      else request.reject(new RealtimeError(CLIENT_ERROR_CODES.DISCONNECTED, error?.message ?? String(error)));
    }
  }

  _callUnsubscribed(subscription, info) {
    if (!subscription.onUnsubscribed) return;
    try {
      subscription.onUnsubscribed(info, subscription);
    } catch (error) {
      report(error);
    }
  }
}

const Realtime = Object.freeze({
  RealtimeClient,
  RealtimeError,
  Subscription,
  ERROR_CODES,
  CLIENT_ERROR_CODES,
  CLOSE_CODES,
  STATES,
  PROTOCOL_VERSION,
  channelMatches,
});

// For page code that is not a module. Assigning a global is not touching the DOM.
if (typeof window !== "undefined" && window.Realtime === undefined) window.Realtime = Realtime;

export default Realtime;
