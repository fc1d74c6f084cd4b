// Types of client.js: the liveupdates browser client.

/** The connection as a banner shows it. */
export type Status = 'connecting' | 'connected' | 'reconnecting' | 'offline' | 'closed'

/** Why the client stopped on its own: only 4401 (unauthorized) stops it; after every other
 * close it reconnects. */
export interface ClientError {
  code: number
  reason: string
}

export type QueryKey = readonly unknown[]

/** A stream's position: offsets of two epochs are not comparable. */
export interface Position {
  epoch: string
  offset: number
}

/** The last applied position per stream: `all`, `user:<id>`, `topic:<name>`. */
export type Cursors = Record<string, Position>

/** An event: `invalidate` (keys), `set` (key, data) or an application event (its own fields). */
export interface LiveEvent extends Position {
  stream: string
  type: 'invalidate' | 'set' | (string & {})
  keys?: QueryKey[]
  key?: QueryKey
  data?: unknown
  [field: string]: unknown
}

export interface Welcome {
  type: 'welcome'
  v: number
  conn: string
  user: string | null
  heartbeat: number
  limits?: { max_frame_bytes: number; max_subscriptions: number; rate: number; burst: number }
}

export interface Subscribed extends Position {
  type: 'subscribed'
  stream: string
  outcome: 'fresh' | 'recovered' | 'resync'
  reason: string | null
  id: number | null
}

/** A `resync` message, or a `subscribed` whose outcome is resync: refetch what the stream covers. */
export interface Resync extends Position {
  type: 'resync' | 'subscribed'
  stream: string
  reason: string | null
}

export interface Unsubscribed {
  type: 'unsubscribed'
  stream: string
  id: number | null
}

export interface ServerError {
  type: 'error'
  code: string
  message: string
  topic: string | null
  id: number | null
}

export interface ServerMessage {
  type: string
  [field: string]: unknown
}

export interface ClientEvents {
  status: (status: Status, error: ClientError | null) => void
  event: (event: LiveEvent) => void
  resync: (message: Resync) => void
  subscribed: (message: Subscribed) => void
  unsubscribed: (message: Unsubscribed) => void
  error: (message: ServerError) => void
  welcome: (message: Welcome) => void
  /** Every server message as received, before duplicates are dropped. */
  message: (message: ServerMessage) => void
}

/** Time and timers (Date.now and the global timers by default). */
export interface Clock {
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(id: any): void
}

export type EnvEvent = 'online' | 'offline' | 'focus' | 'visibilitychange'

/** The page's state (window, document and navigator by default). */
export interface Env {
  online(): boolean
  visible(): boolean
  listen(fn: (type: EnvEvent) => void): () => void
}

export interface WebSocketLike {
  onopen: ((event: any) => void) | null
  onmessage: ((event: { data: any }) => void) | null
  onclose: ((event: { code: number }) => void) | null
  send(data: string): void
  close(code?: number): void
}

export interface EventSourceLike {
  onmessage: ((event: { data: any }) => void) | null
  onerror: ((event: any) => void) | null
  close(): void
}

export interface ClientOptions {
  /** The WebSocket endpoint; a path is resolved against the page (http -> ws). */
  url: string
  /** The SSE endpoint, used when the WebSocket cannot connect. */
  sseUrl?: string
  /** Called before each connect and on `expiring`; never twice at once. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>
  topics?: Iterable<string>
  /** Cursors to resume from (for example saved in sessionStorage). */
  cursors?: Cursors
  /** EventSource's withCredentials (cookies on a cross-origin SSE URL). */
  withCredentials?: boolean
  /** Backoff: the first retry waits up to `base` ms (1000), no retry more than `cap` ms (30000). */
  base?: number
  cap?: number
  /** Watchdog: dead after 2 * heartbeat + `margin` ms of silence (1000). */
  margin?: number
  /** Watchdog: dead without a welcome after this many ms (20000). */
  connectTimeout?: number
  /** After an `offline` event, ms for an open connection to answer a ping before it is dropped. */
  probe?: number
  /** Use SSE after this many WebSocket failures before any welcome (3). */
  sseAfter?: number
  WebSocket?: (new (url: string, protocols?: string | string[]) => WebSocketLike) | null
  EventSource?: (new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike) | null
  clock?: Clock
  env?: Env
  random?: () => number
}

export interface Client {
  readonly status: Status
  readonly error: ClientError | null
  readonly topics: string[]
  readonly cursors: Cursors
  readonly transport: 'websocket' | 'sse' | null
  /** Listen to `type`; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(type: K, fn: ClientEvents[K]): () => void
  onStatus(fn: ClientEvents['status']): () => void
  /** Add a topic to the subscription set (kept across reconnects). */
  subscribe(topic: string): void
  unsubscribe(topic: string): void
  /** Connect now (a "retry" button, or after a new login when stopped by 4401). */
  reconnect(): void
  /** Stop for good: no socket, timer or listener is left behind. */
  close(): void
}

export function createClient(options: ClientOptions): Client
