// Fakes for the client's environment: a clock whose timers run only when told, a WebSocket
// and an EventSource driven by the test, the page's network/visibility state, Web Locks and
// BroadcastChannel. Nothing here sleeps.
import { createClient } from '../../src/liveupdates/static/client.js'

/** A clock whose timers run only in `advance`; `jump` moves time without running them. */
export function fakeClock(start = 1_000_000) {
  let now = start
  let seq = 0
  const timers = new Map()
  return {
    now: () => now,
    setTimeout(fn, ms = 0) {
      timers.set(++seq, { fn, at: now + Math.max(0, ms), ms })
      return seq
    },
    clearTimeout: (id) => void timers.delete(id),
    pending: () => timers.size,
    delays: () => [...timers.values()].map((t) => t.ms),
    jump(ms) {
      now += ms
    },
    advance(ms) {
      const end = now + ms
      for (;;) {
        let next = null
        for (const [id, t] of timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t]
        if (!next) break
        timers.delete(next[0])
        now = next[1].at
        next[1].fn()
      }
      now = end
    },
  }
}

/** A WebSocket class that records every instance; the test opens, feeds and closes them. */
export function fakeWebSocket() {
  const sockets = []
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url
      this.protocols = protocols
      this.sent = []
      this.readyState = 0
      this.closeCode = null
      sockets.push(this)
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open')
      this.sent.push(JSON.parse(text))
    }
    close(code) {
      this.readyState = 3
      this.closeCode = code
    }
    // --- driven by the test ---
    open() {
      this.readyState = 1
      this.onopen?.({})
    }
    receive(...messages) {
      this.onmessage?.({ data: JSON.stringify(messages) })
    }
    drop(code = 1006) {
      this.readyState = 3
      this.onclose?.({ code, reason: '' })
    }
    /** A refused connection as node 20 reports it: `error`, and no `close` ever. */
    refuse() {
      this.onerror?.({})
    }
    welcome(heartbeat = 25000, user = null) {
      this.receive({ type: 'welcome', v: 1, conn: 'c1', user, heartbeat, limits: {} })
    }
    get handlers() {
      return [this.onopen, this.onmessage, this.onclose, this.onerror].filter(Boolean).length
    }
  }
  FakeWebSocket.sockets = sockets
  FakeWebSocket.last = () => sockets[sockets.length - 1]
  return FakeWebSocket
}

/** An EventSource class that records every instance. */
export function fakeEventSource() {
  const sources = []
  class FakeEventSource {
    constructor(url, init) {
      this.url = url
      this.init = init
      this.closed = false
      sources.push(this)
    }
    close() {
      this.closed = true
    }
    receive(...messages) {
      this.onmessage?.({ data: JSON.stringify(messages) })
    }
    fail() {
      this.onerror?.({})
    }
    get query() {
      return new URL(this.url, 'http://x').searchParams
    }
  }
  FakeEventSource.sources = sources
  FakeEventSource.last = () => sources[sources.length - 1]
  return FakeEventSource
}

/** The page: online and visible unless told otherwise; `fire` dispatches an event. */
export function fakeEnv() {
  const fns = new Set()
  const env = {
    isOnline: true,
    isVisible: true,
    online: () => env.isOnline,
    visible: () => env.isVisible,
    listen(fn) {
      fns.add(fn)
      return () => fns.delete(fn)
    },
    listeners: () => fns.size,
    fire(type) {
      if (type === 'online' || type === 'offline') env.isOnline = type === 'online'
      fns.forEach((fn) => fn(type))
    },
  }
  return env
}

/** A deterministic random source (mulberry32). */
export function seeded(seed = 42) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A client wired to fresh fakes; returns them all. */
export function setup(options = {}) {
  const clock = fakeClock()
  const env = options.env || fakeEnv()
  const WebSocket = fakeWebSocket()
  const EventSource = fakeEventSource()
  const statuses = []
  const seen = { event: [], resync: [], subscribed: [], error: [] }
  const client = createClient({ url: 'ws://test/ws', clock, env, WebSocket, EventSource, random: () => 0.5, ...options })
  client.onStatus((s, err) => statuses.push(err ? `${s}:${err.code}` : s))
  for (const type in seen) client.on(type, (m) => seen[type].push(m))
  return { client, clock, env, WebSocket, EventSource, statuses, seen, ws: () => WebSocket.last() }
}

/** A socket of `t` that is open and welcomed. */
export function connected(t, heartbeat = 25000, user = null) {
  const ws = t.ws()
  ws.open()
  ws.welcome(heartbeat, user)
  return ws
}

/** Let pending promise callbacks run (getToken, microtasks). */
export const settle = () => new Promise((resolve) => setImmediate(resolve))

/** An event message. */
export const ev = (stream, offset, fields = {}, epoch = 'e1') => ({ stream, epoch, offset, type: 'invalidate', keys: [['x']], ...fields })

/** Web Locks: a queue per name, granted in order; `signal` aborts a waiting request. */
export function fakeLocks() {
  const queues = new Map()
  return {
    request(name, options, callback) {
      const queue = queues.get(name) || []
      queues.set(name, queue)
      return new Promise((resolve, reject) => {
        const entry = {
          grant() {
            Promise.resolve()
              .then(() => callback({ name }))
              .then(resolve, reject)
              .finally(() => {
                queue.shift()
                queue[0]?.grant()
              })
          },
        }
        options.signal?.addEventListener('abort', () => {
          const i = queue.indexOf(entry)
          if (i > 0) {
            queue.splice(i, 1)
            reject(new DOMException('aborted', 'AbortError'))
          }
        })
        queue.push(entry)
        if (queue.length === 1) entry.grant()
      })
    },
    holders: (name) => (queues.get(name) || []).length,
  }
}

/** BroadcastChannel between fake tabs: delivery to every other open channel of the name, in order. */
export function fakeBroadcast() {
  const open = new Set()
  class FakeBroadcastChannel {
    constructor(name) {
      this.name = name
      open.add(this)
    }
    postMessage(data) {
      const copy = structuredClone(data)
      for (const other of open) {
        if (other !== this && other.name === this.name) queueMicrotask(() => open.has(other) && other.onmessage?.({ data: copy }))
      }
    }
    close() {
      open.delete(this)
    }
  }
  FakeBroadcastChannel.open = () => open.size
  return FakeBroadcastChannel
}
