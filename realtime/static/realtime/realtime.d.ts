// Type declarations for realtime.js, the browser client for realtime's WebSocket protocol
// (docs/protocol.md). The module has no dependencies and needs no build step.

export declare const PROTOCOL_VERSION: 1;

/** The server's error codes (`realtime.errors.ErrorCode`). */
export declare const ERROR_CODES: Readonly<{
  INVALID_DATA: "invalid_data";
  INVALID_CREDENTIALS: "invalid_credentials";
  ACCESS_DENIED: "access_denied";
  INVALID_CHANNEL_NAME: "invalid_channel_name";
  INVALID_CHANNEL: "invalid_channel";
  MESSAGE_TOO_LARGE: "message_too_large";
  TOO_MANY_SUBSCRIPTIONS: "too_many_subscriptions";
  ALREADY_AUTHENTICATED: "already_authenticated";
  RATE_LIMITED: "rate_limited";
  TOO_MANY_AUTH_FAILURES: "too_many_auth_failures";
  TOO_MANY_CONNECTIONS: "too_many_connections";
  HISTORY_DISABLED: "history_disabled";
  PRESENCE_DISABLED: "presence_disabled";
  UNAVAILABLE: "unavailable";
  UNKNOWN_OUTCOME: "unknown_outcome";
  INTERNAL_ERROR: "internal_error";
  METHOD_NOT_FOUND: "method_not_found";
  REJECTED: "rejected";
  HANDLER_TIMEOUT: "handler_timeout";
}>;

/** Failures the client detects itself; the server never sends these. */
export declare const CLIENT_ERROR_CODES: Readonly<{
  TIMEOUT: "timeout";
  DISCONNECTED: "disconnected";
  CLOSED: "closed";
  TOKEN_UNAVAILABLE: "token_unavailable";
}>;

/** WebSocket close codes the server uses (`realtime.errors.CloseCode`). */
export declare const CLOSE_CODES: Readonly<{
  NORMAL: 1000;
  TOO_MANY_INVALID_FRAMES: 4001;
  TOO_MANY_AUTH_FAILURES: 4002;
  ORIGIN_NOT_ALLOWED: 4003;
  TOO_SLOW: 4004;
  UNAVAILABLE: 4005;
  STALE: 4006;
  TOO_MANY_CONNECTIONS: 4007;
  TOO_MANY_CONNECTIONS_FROM_ADDRESS: 4008;
  SHUTTING_DOWN: 4009;
  DISCONNECTED: 4100;
  DISCONNECTED_FOR_GOOD: 4101;
}>;

export declare const STATES: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  CONNECTED: "connected";
  DISCONNECTED: "disconnected";
  CLOSED: "closed";
}>;

export type ServerErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];
/** Whether a subscription (a channel, or a pattern such as `rooms/*` or `rooms/**`) covers `channel`. */
export declare function channelMatches(subscription: string, channel: string): boolean;

export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[keyof typeof CLIENT_ERROR_CODES];
export type ErrorCode = ServerErrorCode | ClientErrorCode;
export type CloseCode = (typeof CLOSE_CODES)[keyof typeof CLOSE_CODES];
export type State = (typeof STATES)[keyof typeof STATES];
export type Access = "read-only" | "read-write";
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Who published, set by the server for publications made with a user's browser token. */
export interface PublicationUser {
  id: number | null;
  name: string;
  [key: string]: unknown;
}

/** One publication, as received (`{"message": {...}}`). Later versions may add fields. */
export interface Message<T = Json> {
  channel: string;
  event: string;
  data: T;
  user?: PublicationUser;
  /**
   * When the server accepted the publication: Unix seconds (a float). On a channel with
   * the CloudEvents option the message is a CloudEvent and `time` its RFC 3339 timestamp.
   */
  time?: number | string;
  /** On channels with history: the publication's place in the channel's stream. */
  offset?: number;
  epoch?: string;
  [key: string]: unknown;
}

/** Where a channel's stream stands, or the last publication seen on it. */
export interface Position {
  offset: number;
  epoch: string;
}

/** The reply to `history()`. */
export interface HistoryPage<T = Json> extends Position {
  channel: string;
  /** False when publications after `since` are no longer kept: this is not all of them. */
  complete: boolean;
  /** Pass as `since` for the next page; null at the end. */
  next: number | null;
  publications: Message<T>[];
}

/** One member of a channel with presence: a user with all their connections, or one connection. */
export interface PresenceMember {
  user: PublicationUser | null;
  clients: string[];
}

/** The server's success reply (`{"ok": true, "id": n}`). */
export interface OkReply {
  ok: true;
  id?: number | string;
  /** In replies to `auth` and `refresh` with a token whose authentication ends: unix seconds. */
  expires?: number;
  [key: string]: unknown;
}

export type Notice =
  | { unsubscribed: { channel: string; reason: string } }
  /** reason: "key_revoked", "user_inactive", "token_expired" (the token's session ended without a refresh)... */
  | { logout: { reason: string } }
  /** "broker_unavailable" (not recoverable from history), or "not_recovered" after a reconnect. */
  | { missed: { channel: string; reason: string } }
  | { join: { channel: string; client: string; user: PublicationUser | null } }
  | { leave: { channel: string; client: string; user: PublicationUser | null } }
  /** The server API subscribed this connection (not renewed after a reconnect). */
  | { subscribed: { channel: string; offset?: number; epoch?: string; client?: string } };

export interface UnsubscribedInfo {
  channel: string;
  /** The server's reason ("channel_unavailable", "access_revoked", "key_revoked"...),
   * "logout" after `client.logout()`, or the error code of a refused renewal. */
  reason: string;
}

export interface TokenCredentials {
  token?: string;
  /** Unix seconds after which the token is not presented but renewed from `tokenUrl`. */
  expires?: number;
  tokenUrl?: string;
  access?: Access;
}

export interface SecretCredentials {
  secret: string;
  access?: Access;
}

export type Credentials = TokenCredentials | SecretCredentials;

export interface ReconnectOptions {
  /** Milliseconds before the first retry. Default 500. */
  minDelay?: number;
  /** Longest wait between retries. Default 30000. */
  maxDelay?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
  /** Fraction of each delay that is randomly taken off (0 to 1). Default 0.5. */
  jitter?: number;
}

/** The subset of the WebSocket interface the client uses, for injected implementations. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: string }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** A signed browser token (from the `{% realtime %}` tag or `tokenUrl`). */
  token?: string;
  /** The token's expiry, unix seconds. */
  expires?: number;
  /** GET (same origin, with cookies) answering `{"token": "...", "expires": unixSeconds}`;
   * 401/403 mean "no token for this user": the client then stays anonymous. */
  tokenUrl?: string;
  /** An access key's secret, for trusted clients only: never put one in a public page. */
  secret?: string;
  access?: Access;
  /** Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Used for `tokenUrl`. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** `false` turns reconnecting off: any close then ends in state "closed". */
  reconnect?: ReconnectOptions | false;
  /** Milliseconds without any frame before a `{"ping": true}` is sent; 0 turns pings off. Default 25000. */
  heartbeatInterval?: number;
  /** Milliseconds to wait for any frame after a ping before the connection is dropped. Default 10000. */
  heartbeatTimeout?: number;
  /** Recover missed publications on channels with history after a reconnect. Default true. */
  recover?: boolean;
  /** Milliseconds after sending a request before it rejects with "timeout". Default 10000. */
  requestTimeout?: number;
  /** Milliseconds for the socket to open before the attempt is abandoned. Default 10000. */
  connectTimeout?: number;
  /**
   * `"sse"`: when no WebSocket could be opened (`fallbackAfter` attempts in a row, default 1),
   * receive over server-sent events and publish over HTTP instead, for the rest of the
   * client's life. Tokens only (a secret cannot go in a URL); `history`, `presence` and
   * `time` then reject with "unavailable". The client emits `realtime:transport`.
   */
  fallback?: "sse";
  fallbackAfter?: number;
  /** Default: beside the WebSocket URL, `/realtime/sse`. */
  sseUrl?: string;
  /** Default: beside the WebSocket URL, `/realtime/api/publish`. */
  publishUrl?: string;
  /** Default `globalThis.EventSource`. */
  EventSource?: new (url: string) => EventSource;
}

export declare class RealtimeError extends Error {
  readonly name: "RealtimeError";
  readonly code: ErrorCode | string;
  /** Human text from the server or the client; not stable. */
  readonly detail: string;
  /** The server's error frame, for server errors. */
  readonly frame?: { err: string; detail?: string; id?: number | string };
  /** The WebSocket close code, for "disconnected" and "closed". */
  readonly closeCode?: number | null;
  constructor(code: string, detail?: string, extra?: object);
}

export interface SubscribeOptions {
  onUnsubscribed?: (info: UnsubscribedInfo, subscription: Subscription) => void;
}

export declare class Subscription<T = Json> {
  readonly channel: string;
  /** Resolves when the server first confirms the subscription; rejects with the refusal. */
  readonly ready: Promise<Subscription<T>>;
  /** False once unsubscribed, by you or by the server. */
  readonly active: boolean;
  /** True once the server said the channel bubbles: publications on channels below it arrive here too. */
  readonly bubble: boolean;
  onMessage: ((message: Message<T>, subscription: Subscription<T>) => void) | null;
  onUnsubscribed: ((info: UnsubscribedInfo, subscription: Subscription<T>) => void) | null;
  /** Stop reading. The server is told once no other subscription reads this channel. */
  unsubscribe(): Promise<void>;
}

export interface StateDetail {
  state: State;
  previous: State;
  /** The WebSocket close code, on "disconnected" and "closed" (1006 when the client gave up on the socket). */
  code?: number | null;
  reason?: string;
  /** Milliseconds until the next attempt, on "disconnected". */
  retryIn?: number;
}

export interface RealtimeEventMap {
  "realtime:state": CustomEvent<StateDetail>;
  "realtime:message": CustomEvent<Message>;
  "realtime:notice": CustomEvent<Notice>;
  "realtime:error": CustomEvent<{ error: RealtimeError }>;
  /** The live connection's token was renewed with `refresh`; `expires` is when the new one ends. */
  "realtime:refresh": CustomEvent<{ expires: number | null }>;
  /** No WebSocket could be opened and the client fell back to server-sent events. */
  "realtime:transport": CustomEvent<{ transport: "sse"; code: number; reason: string }>;
}

export declare class RealtimeClient extends EventTarget {
  /** Read `<meta name="realtime" data-url data-token data-token-url data-expires>`; does not connect. */
  static fromPage(root?: ParentNode, options?: ClientOptions): RealtimeClient;

  /** @param url ws(s)://, http(s):// or a path resolved against the page. Default "/realtime/ws". */
  constructor(url?: string, options?: ClientOptions);

  /** The absolute ws:// or wss:// URL. */
  readonly url: string;
  /** The options given, merged over the defaults. */
  readonly options: Readonly<
    ClientOptions & {
      reconnect: Required<ReconnectOptions> | false;
      heartbeatInterval: number;
      heartbeatTimeout: number;
      requestTimeout: number;
      connectTimeout: number;
    }
  >;
  readonly state: State;
  /** True while the current connection is authenticated. */
  readonly authenticated: boolean;
  /** The live subscriptions, in the order they were made. */
  readonly subscriptions: Subscription[];

  /** Resolves once connected and (with credentials) authenticated; rejects with "closed"
   * or with the auth error (the connection then stays up, anonymous). */
  connect(): Promise<void>;
  subscribe<T = Json>(
    channel: string,
    onMessage?: (message: Message<T>, subscription: Subscription<T>) => void,
    options?: SubscribeOptions,
  ): Subscription<T>;
  /** `idempotencyKey`: a retry with the same key on the same channel publishes nothing twice. */
  publish(channel: string, event: string, data?: unknown, options?: { idempotencyKey?: string }): Promise<OkReply>;
  /** Stored publications after `since` (default 0), at most `limit` (1-1000, default 100). */
  history<T = Json>(channel: string, options?: { since?: number; limit?: number; epoch?: string }): Promise<HistoryPage<T>>;
  /** Who is subscribed to a channel with presence. */
  presence(channel: string): Promise<PresenceMember[]>;
  /**
   * Call a method registered on the server (`@realtime.rpc.method("name")`): resolves with
   * its result; rejects with a RealtimeError (`method_not_found`, `access_denied`,
   * `invalid_data`, `rejected`, `handler_timeout`, `internal_error`, or the method's own code).
   */
  rpc<R = Json>(method: string, data?: unknown): Promise<R>;
  /** "websocket", or "sse" once the client fell back to server-sent events. */
  readonly transport: "websocket" | "sse";
  /** The server's clock, in Unix seconds (a float). */
  time(): Promise<number>;
  /** The last position seen on a channel with history, if any. */
  position(channel: string): Position | undefined;
  /** Keep these credentials (used again after every reconnect) and authenticate with them. */
  auth(credentials?: Credentials): Promise<OkReply | null>;
  /** Forget the credentials; every subscription ends with reason "logout". */
  logout(): Promise<OkReply | null>;
  /** Send `disconnect`, stop reconnecting, reject everything pending with "closed". */
  close(): void;

  addEventListener<K extends keyof RealtimeEventMap>(
    type: K,
    listener: (this: RealtimeClient, event: RealtimeEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof RealtimeEventMap>(
    type: K,
    listener: (this: RealtimeClient, event: RealtimeEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

declare const Realtime: Readonly<{
  RealtimeClient: typeof RealtimeClient;
  RealtimeError: typeof RealtimeError;
  Subscription: typeof Subscription;
  ERROR_CODES: typeof ERROR_CODES;
  CLIENT_ERROR_CODES: typeof CLIENT_ERROR_CODES;
  channelMatches: typeof channelMatches;
  CLOSE_CODES: typeof CLOSE_CODES;
  STATES: typeof STATES;
  PROTOCOL_VERSION: typeof PROTOCOL_VERSION;
}>;
export default Realtime;

declare global {
  interface Window {
    /** Set when realtime.js is loaded, for page code that is not a module. */
    Realtime: typeof Realtime;
    /** The page's client, set by connect.js (`{% realtime connect=True %}`). */
    realtime?: RealtimeClient;
  }
  interface DocumentEventMap {
    /** Fired by connect.js once `window.realtime` is connected. */
    "realtime:ready": CustomEvent<{client: RealtimeClient}>;
  }
}
