// One connection per browser: the tabs of an origin elect a leader with a Web Lock held for
// the tab's life; the leader runs the real client and shares every server message over a
// BroadcastChannel. Each tab applies the messages with its own cursors, so the tab that takes
// over when the leader goes resumes from the newest position it saw. Without Web Locks or
// BroadcastChannel every tab simply gets its own client.
//
// Channel messages: {m: message} and {s: status, e: error} from the leader; {lead: 1} when a
// tab becomes leader; {hi: tabId, topics} and {bye: tabId} and {reconnect: 1} to the leader.
import { createClient } from './client.js'
import { createEmitter } from './emitter.js'
import { pick } from './env.js'
import { dispatch } from './positions.js'

export function createSharedClient(options) {
  const locks = pick(options.locks, globalThis.navigator?.locks)
  const BC = pick(options.BroadcastChannel, globalThis.BroadcastChannel)
  if (!locks || !BC) return createClient(options)
  const name = options.name || 'liveupdates ' + options.url
  const id = String((options.random || Math.random)()).slice(2)
  const channel = new BC(name)
  const events = createEmitter()
  const topics = new Set(options.topics)
  const cursors = { ...options.cursors }
  const peers = new Map() // leader only: tab id -> its topics
  const stop = new AbortController()
  let status = 'connecting'
  let error = null
  let lead = null // our client, while we are the leader
  let release = null
  let closed = false
  let ever = false

  const post = (data) => channel.postMessage(data)
  const mine = (m) => !m.stream?.startsWith('topic:') || topics.has(m.stream.slice(6))

  function deliver(m) {
    dispatch(m, cursors, (type, x) => mine(x) && events.emit(type, x))
  }

  function setStatus(s, err) {
    if (s === 'connecting' && ever) s = 'reconnecting' // a new leader, for a tab that was connected
    ever ||= s === 'connected'
    if (s === status && err?.code === error?.code) return
    status = s
    error = err
    events.emit('status', s, err)
  }

  function announce() {
    if (lead) sync()
    else post({ hi: id, topics: [...topics] })
  }

  // Leader: the client's topics are the union of every tab's.
  function sync() {
    const want = new Set(topics)
    peers.forEach((ts) => ts.forEach((t) => want.add(t)))
    lead.topics.forEach((t) => want.has(t) || lead.unsubscribe(t))
    want.forEach((t) => lead.subscribe(t))
  }

  function publish(s, err) {
    if (closed) return
    post({ s, e: err })
    setStatus(s, err)
  }

  function becomeLeader(done) {
    release = done
    if (closed) return done() // granted just as the tab closed
    lead = createClient({ ...options, topics: [...topics], cursors })
    lead.on('message', (m) => {
      post({ m })
      deliver(m)
    })
    lead.onStatus(publish)
    post({ lead: 1 })
    publish(lead.status, lead.error)
  }

  channel.onmessage = ({ data: d }) => {
    if (d.m) deliver(d.m)
    else if (d.s) setStatus(d.s, d.e)
    else if (d.lead) announce()
    else if (!lead) return
    else if (d.hi) {
      peers.set(d.hi, d.topics)
      sync()
      post({ s: status, e: error })
    } else if (d.bye) {
      peers.delete(d.bye)
      sync()
    } else if (d.reconnect) lead.reconnect()
  }

  locks
    .request(name, { signal: stop.signal }, () => new Promise(becomeLeader))
    .catch(() => {})
  announce()

  return {
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
      return lead ? lead.transport : null
    },
    get leader() {
      return !!lead
    },
    on: events.on,
    onStatus: (fn) => events.on('status', fn),
    subscribe(topic) {
      if (topics.has(topic)) return
      topics.add(topic)
      announce()
    },
    unsubscribe(topic) {
      if (topics.delete(topic)) announce()
    },
    reconnect() {
      if (lead) lead.reconnect()
      else post({ reconnect: 1 })
    },
    close() {
      if (closed) return
      closed = true
      stop.abort()
      if (lead) lead.close()
      else post({ bye: id })
      release?.()
      channel.close()
      setStatus('closed', null)
      events.clear()
    },
  }
}
