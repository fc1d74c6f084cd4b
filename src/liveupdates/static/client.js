// The liveupdates browser client: one connection (a WebSocket, or Server-Sent Events as a
// fallback) that reconnects forever with full-jitter backoff, resumes every stream from its
// cursor, and reports a status for a banner. See docs/protocol.md for the wire contract.
import { fullJitter } from './backoff.js'
import { createEmitter } from './emitter.js'
import { browserEnv, pick, systemClock } from './env.js'
import { dispatch, since } from './positions.js'
import { openEventSource, openWebSocket } from './transports.js'

// Close codes after which the client stops instead of reconnecting.
const STOPS = { 4401: 'unauthorized' } // every other close: reconnect

const DEFAULTS = {
  base: 1000, // backoff: the first retry waits up to `base` ms
  cap: 30000, // backoff: no retry waits more than `cap` ms
  margin: 1000, // watchdog: dead after 2 * heartbeat + margin ms of silence
  connectTimeout: 20000, // watchdog: dead without a `welcome` after this many ms
  probe: 3000, // after an `offline` event, dead without an answer to a ping after this many ms
  sseAfter: 3, // fall back to SSE after this many WebSocket failures before any `welcome`
  random: Math.random,
}

export function createClient(options) {
  const o = { ...DEFAULTS, ...options }
  const clock = o.clock || systemClock
  const env = o.env || browserEnv()
  const WS = pick(o.WebSocket, globalThis.WebSocket) // null: never use WebSocket
  const ES = pick(o.EventSource, globalThis.EventSource)
  const events = createEmitter()
  const topics = new Set(o.topics)
  const cursors = { ...o.cursors }
  const timers = {}
  let status = 'connecting'
  let error = null
  let conn = null // {t: transport, sse, ready, welcome, hb, deadline}
  let gen = 0 // bumped to cancel a connect that awaits its token
  let attempt = 0
  let failures = 0
  let sse = !WS
  let wsWorks = false
  let ever = false
  let closed = false
  let byeMs = null
  let unlisten = null
  let pendingToken = null
  let resubscribing = false
  let seq = 0

  function arm(name, fn, ms) {
    disarm(name)
    timers[name] = clock.setTimeout(() => {
      delete timers[name]
      fn()
    }, ms)
  }

  function disarm(name) {
    if (name in timers) clock.clearTimeout(timers[name])
    delete timers[name]
  }

  function setStatus(s, err = null) {
    if (s === status && err === error) return
    status = s
    error = err
    events.emit('status', s, err)
  }

  // --- connecting -------------------------------------------------------------------------

  function start() {
    unlisten ||= env.listen(wake)
    connect()
  }

  async function connect() {
    disarm('retry')
    if (!env.online()) return setStatus('offline')
    setStatus(ever ? 'reconnecting' : 'connecting')
    const my = ++gen
    let token
    try {
      token = o.getToken ? await fetchToken() : undefined
    } catch {
      return my === gen && lost()
    }
    if (my === gen) open(token)
  }

  function open(token) {
    const c = { sse, ready: sse, hb: 0 }
    const h = {
      open: () => c === conn && hello(token),
      frame: (data) => c === conn && frame(data),
      close: (code) => c === conn && lost(code),
    }
    conn = c
    try {
      c.t = sse ? openEventSource(ES, sseUrl(token), o.withCredentials, h) : openWebSocket(WS, wsUrl(o.url), h)
    } catch {
      conn = null
      if (sse || !o.sseUrl) return lost()
      sse = true
      return connect()
    }
    watch(o.connectTimeout)
  }

  function hello(token) {
    conn.ready = true
    send({ type: 'hello', v: 1, token: token ?? undefined, topics: [...topics], since: since(cursors, topics) })
  }

  function fetchToken() {
    return (pendingToken ||= Promise.resolve()
      .then(o.getToken)
      .finally(() => (pendingToken = null)))
  }

  // The connection is gone: reconnect after a backoff (or within the server's `goodbye`
  // window), or stop for good on 4401.
  function lost(code) {
    const c = conn
    detach()
    if (code in STOPS) return halt({ code, reason: STOPS[code] })
    if (c && !c.sse && !c.welcome && ++failures >= o.sseAfter && o.sseUrl && !wsWorks) sse = true
    const delay = byeMs != null ? o.random() * byeMs : fullJitter(attempt++, o.base, o.cap, o.random)
    byeMs = null
    if (!env.online()) return setStatus('offline')
    setStatus(ever ? 'reconnecting' : 'connecting')
    arm('retry', connect, delay)
  }

  function detach() {
    conn?.t?.close()
    conn = null
    disarm('watch')
  }

  function halt(err = null) {
    gen++
    detach()
    disarm('retry')
    unlisten?.()
    unlisten = null
    setStatus('closed', err)
  }

  // --- heartbeat watchdog -----------------------------------------------------------------
  // A background tab may run its timers late or never, so the deadline is also checked on
  // every message, before every send and when the page wakes up, not only by the timer.

  function watch(ms) {
    conn.deadline = clock.now() + ms
    // One timer, re-armed only when the deadline comes earlier than it (not per message).
    if (conn.due > conn.deadline || !('watch' in timers)) {
      conn.due = conn.deadline
      arm('watch', check, ms)
    }
  }

  function check() {
    if (alive() && conn) watch(conn.deadline - clock.now())
  }

  function alive() {
    if (!conn || clock.now() < conn.deadline) return true
    lost()
    return false
  }

  // --- messages ---------------------------------------------------------------------------

  function frame(data) {
    if (!alive()) return
    let messages
    try {
      messages = [].concat(JSON.parse(data))
    } catch {
      return
    }
    const c = conn
    for (const m of messages) if (c === conn) handle(m)
    if (c === conn) watch(c.hb ? 2 * c.hb + o.margin : o.connectTimeout)
  }

  function handle(m) {
    const c = conn
    events.emit('message', m)
    dispatch(m, cursors, events.emit)
    if (c !== conn) return // a listener closed or reconnected the client
    switch (m.type) {
      case 'welcome':
        conn.welcome = m
        conn.hb = m.heartbeat
        attempt = 0
        ever = true
        wsWorks ||= !conn.sse
        return setStatus('connected')
      case 'ping':
        return conn.sse || send({ type: 'pong' })
      case 'expiring':
        return refresh()
      case 'goodbye':
        byeMs = m.retry_ms
        return
      case 'error':
        // Over SSE a fatal error arrives as a message named after the close code.
        if (m.code === 'unauthorized') halt({ code: 4401, reason: m.code })
    }
  }

  function send(m) {
    if (alive() && conn?.ready && !conn.sse) conn.t.send(m)
  }

  function refresh() {
    const c = conn
    if (!o.getToken || c.refreshing) return
    // SSE has no way up: reconnect at once, with a fresh token and the cursors.
    if (c.sse) return detach(), connect()
    c.refreshing = true
    fetchToken().then(
      (token) => c === conn && send({ type: 'refresh', token }),
      () => {}, // the server closes with 4401 when the credential expires
    ).finally(() => (c.refreshing = false))
  }

  // --- subscriptions ----------------------------------------------------------------------

  function change(type, topic) {
    if (!conn?.ready) return // the next hello carries the topics
    if (!conn.sse) return send({ type, topic, since: type === 'subscribe' ? cursors['topic:' + topic] : undefined, id: ++seq })
    // SSE has no way up: reconnect with the new topic list (once for a burst of changes).
    if (resubscribing) return
    resubscribing = true
    queueMicrotask(() => {
      resubscribing = false
      if (conn?.sse) {
        detach()
        connect()
      }
    })
  }

  // --- the page ---------------------------------------------------------------------------

  function wake(type) {
    alive()
    if (conn) {
      // Browsers may hold an open WebSocket (and its frames) while offline, yet a localhost or
      // intranet server may still be reachable: ask, and give the answer `probe` ms.
      if (type === 'offline' && conn.ready && !conn.sse) {
        send({ type: 'ping' })
        watch(o.probe)
      }
      return
    }
    const waiting = 'retry' in timers || status === 'offline'
    if (type === 'offline') {
      if ('retry' in timers) {
        disarm('retry')
        setStatus('offline')
      }
    } else if (waiting && (type !== 'visibilitychange' || env.visible())) connect()
  }

  // --- urls -------------------------------------------------------------------------------

  function sseUrl(token) {
    const q = new URLSearchParams()
    const s = since(cursors, topics)
    if (topics.size) q.set('topics', [...topics].join(','))
    if (Object.keys(s).length) q.set('since', JSON.stringify(s))
    if (token) q.set('token', token)
    const url = o.sseUrl
    const query = q.toString()
    return query ? url + (url.includes('?') ? '&' : '?') + query : url
  }

  const client = {
    get status() {
      return status
    },
    get error() {
      return error
    },
    get topics() {
      return [...topics]
    },
    get cursors() {
      return { ...cursors }
    },
    get transport() {
      return conn ? (conn.sse ? 'sse' : 'websocket') : null
    },
    on: events.on,
    onStatus: (fn) => events.on('status', fn),
    subscribe(topic) {
      if (topics.has(topic)) return
      topics.add(topic)
      change('subscribe', topic)
    },
    unsubscribe(topic) {
      if (topics.delete(topic)) change('unsubscribe', topic)
    },
    reconnect() {
      if (closed) return
      detach()
      attempt = 0
      start()
    },
    close() {
      if (closed) return
      closed = true
      halt()
      events.clear()
    },
  }
  start()
  return client
}

/** Resolve a relative URL against the page, with the ws: or wss: scheme. */
function wsUrl(url) {
  const page = globalThis.location
  if (!page || /^wss?:/.test(url)) return url
  const u = new URL(url, page.href)
  u.protocol = u.protocol.replace('http', 'ws')
  return u.href
}
