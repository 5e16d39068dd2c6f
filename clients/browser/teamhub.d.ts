// Types of teamhub.js, the teamhub browser client. Wire shapes follow docs/protocol.md.

export declare const SUBPROTOCOL: "teamhub.v1";

export type Role = "owner" | "admin" | "editor" | "viewer" | "member" | "developer";
export type ErrorCode =
  | "bad_request" | "unauthorized" | "forbidden" | "not_found" | "rate_limited"
  | "too_large" | "unavailable" | "internal" | "quota_exceeded";

export interface Since { epoch: string; offset: number }

export interface PresenceEntry {
  user: string;
  name: string | null;
  /** Live connections of this user in the team, across nodes. */
  conns: number;
  meta: Record<string, unknown> | null;
}

export interface MessageFrame {
  op: "message";
  team: string;
  offset: number;
  type: string;
  user: string;
  data: unknown;
  /** RFC 3339 UTC with milliseconds. */
  ts: string;
}

export interface PresenceDiff {
  op: "presence_diff";
  team: string;
  joins: PresenceEntry[];
  leaves: PresenceEntry[];
}

export interface JoinReply {
  op: "reply";
  id: number;
  ok: true;
  team: string;
  epoch: string;
  offset: number;
  presence: PresenceEntry[];
  recovered: boolean;
  missed: MessageFrame[];
}

/** What to do after a close code: reconnect at once, with backoff, after a new token, or never. */
export type CloseAdvice = "now" | "backoff" | "refresh" | "stop";
export declare function closeAdvice(code: number): CloseAdvice;

export interface BackoffOptions {
  /** Ceiling of the first wait (default 250 ms); doubles per failed attempt. */
  baseMs?: number;
  /** Largest wait (default 30 s). */
  capMs?: number;
  /** Source of randomness in [0, 1) (default Math.random). */
  random?: () => number;
}
/** Full-jitter exponential backoff: uniform in [0, min(capMs, baseMs * 2^attempt)]. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions): number;

/** The (unverified) payload of a JWT; null for API keys and malformed tokens. */
export declare function decodeJwt(token: string): { sub?: string; name?: string; teams?: Record<string, Role>; exp?: number; [claim: string]: unknown } | null;

/** `ws(s)://host/ws?token=...` from a page or node URL (`http(s)://` or `ws(s)://`). */
export declare function socketUrl(base: string, token: string): string;

export interface PresenceChange { joins: PresenceEntry[]; leaves: PresenceEntry[]; reset: boolean }

/** Who is in one team: a join reply's `presence`, then every `presence_diff`. */
export declare class PresenceMap {
  constructor(team: string);
  readonly team: string;
  readonly size: number;
  reset(entries: PresenceEntry[]): void;
  apply(diff: { joins?: PresenceEntry[]; leaves?: PresenceEntry[] }): void;
  get(user: string): PresenceEntry | undefined;
  has(user: string): boolean;
  /** Sorted by user id. */
  entries(): PresenceEntry[];
  onChange(fn: (map: PresenceMap, change: PresenceChange) => void): () => void;
}

/** The last position seen per team, for `since`. */
export declare class Positions {
  joined(reply: { team: string; epoch: string; offset: number; missed?: { offset: number }[] }): void;
  message(m: { team: string; offset: number }): "new" | "duplicate" | "gap" | "unknown";
  since(team: string): Since | undefined;
  forget(team: string): void;
}

export declare class TeamhubError extends Error {
  constructor(code: string, message: string, id?: number | null);
  /** A contract error code, or "closed" / "timeout" / "unavailable" from the client itself. */
  readonly code: ErrorCode | "closed" | "timeout" | string;
  readonly id: number | null;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "stopped";

export interface TeamhubEvents {
  status: { state: ConnectionState };
  /** `rejoin` is true after a reconnect; then `recovered: false` means: reload this team's state. */
  joined: { team: string; reply: JoinReply; recovered: boolean; rejoin: boolean };
  message: MessageFrame;
  presence: { team: string; presence: PresenceMap } & PresenceChange;
  kicked: { team: string; reason: "revoked" | "role_removed" };
  error: Error;
  /**
   * `delayMs` is null when the client stops for good (1002, 1007, 1008, 1009, 4008, a refused
   * origin, and 4001 or a refused token without refreshToken). When the socket never
   * opened (a browser cannot see the handshake's status), `code` is 403 if the node's
   * `GET /origin-check` says it refuses the page's origin, and 401 if it refuses the
   * token over REST.
   */
  close: { code: number; reason: string; advice: CloseAdvice; delayMs: number | null };
  token: { exp: number };
}

export interface TeamhubOptions {
  /** The node's URL, `http(s)://host[:port]` or `ws(s)://...`; default: the page's origin. */
  url?: string;
  /** A JWT or API key, or a function returning the current one. */
  token: string | (() => string);
  /** Returns a new JWT for the same user; called before expiry and after close 4001. */
  refreshToken?: (current: string) => Promise<string>;
  /** How long before `exp` to refresh (default 60 s). */
  refreshMarginMs?: number;
  backoff?: Omit<BackoffOptions, "random">;
  requestTimeoutMs?: number;
  /** Used to tell a refused origin or token from a node that is down after a failed handshake; default: global fetch. */
  fetch?: typeof fetch;
  /** The Origin the handshake carries, asked about after a failed one; default: the page's `location.origin` (none outside a page). */
  pageOrigin?: string;
  /** A WebSocket constructor, for runtimes without a global one. */
  WebSocket?: typeof WebSocket;
}

export declare class TeamhubClient {
  constructor(options: TeamhubOptions);
  readonly state: ConnectionState;
  readonly positions: Positions;
  token: string | (() => string);
  on<K extends keyof TeamhubEvents>(event: K, fn: (value: TeamhubEvents[K]) => void): () => void;
  /** Resolves once the socket is open; rejects if the client stops before that. */
  connect(): Promise<void>;
  close(): void;
  /**
   * Joins (and rejoins after every reconnect, with `since` and the same `meta`; a
   * function `meta` is called again at every rejoin, so it can follow a status). Called
   * while disconnected it rejects with code "unavailable", and the team is joined when
   * the connection opens.
   */
  join(team: string, options?: { meta?: Record<string, unknown> | (() => Record<string, unknown> | null) }): Promise<JoinReply>;
  leave(team: string): Promise<void>;
  /** Resolves with the message's offset. */
  publish(team: string, type: string, data: unknown, options?: { echo?: boolean }): Promise<number>;
  refresh(token: string): Promise<number>;
  /** Fetches a fresh snapshot (`presence` op): diffs do not announce a present user's connection count changing. */
  refreshPresence(team: string): Promise<PresenceMap>;
  /** The live presence map of a team. */
  presence(team: string): PresenceMap;
  request(frame: Record<string, unknown> & { op: string }): Promise<any>;
}
