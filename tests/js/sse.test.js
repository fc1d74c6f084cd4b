// Server-Sent Events fallback: used when the WebSocket cannot connect.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connected, ev, setup, settle } from './helpers.js'

const SSE = 'http://test/sse'

function failWebSocket(t, times) {
  for (let i = 0; i < times; i++) {
    t.ws().drop(1006) // never opened
    t.clock.advance(Math.max(...t.clock.delays())) // the retry, nothing else
  }
}

test('after 3 WebSocket failures before any welcome, EventSource on sseUrl with topics and since', () => {
  const t = setup({ sseUrl: SSE, topics: ['jobs', 'stats'], cursors: { all: { epoch: 'e1', offset: 4 } } })
  failWebSocket(t, 2)
  assert.equal(t.EventSource.sources.length, 0)
  failWebSocket(t, 1)
  assert.equal(t.WebSocket.sockets.length, 3)
  const es = t.EventSource.last()
  assert.ok(es.url.startsWith(SSE + '?'))
  assert.equal(es.query.get('topics'), 'jobs,stats')
  assert.deepEqual(JSON.parse(es.query.get('since')), { all: { epoch: 'e1', offset: 4 } })
  assert.equal(t.client.transport, 'sse')
  es.receive({ type: 'welcome', v: 1, conn: 'c', user: null, heartbeat: 25000 }, { type: 'subscribed', stream: 'all', epoch: 'e1', offset: 4, outcome: 'recovered' }, ev('all', 5))
  assert.equal(t.client.status, 'connected')
  assert.deepEqual(t.seen.event.map((e) => e.offset), [5])
  es.receive({ type: 'ping' }) // no pong over SSE (there is no way up)
  t.client.close()
  assert.ok(es.closed)
  assert.equal(es.onmessage, null)
  assert.equal(t.clock.pending(), 0)
})

test('a WebSocket constructor error switches to SSE at once', () => {
  class Broken {
    constructor() {
      throw new Error('blocked by policy')
    }
  }
  const t = setup({ sseUrl: SSE, WebSocket: Broken })
  assert.equal(t.EventSource.sources.length, 1)
  assert.equal(t.EventSource.last().url, SSE, 'no topics, no cursors: no query')
  t.client.close()
})

test('no WebSocket at all: SSE from the start; a URL with a query gets &', () => {
  const t = setup({ sseUrl: SSE + '?app=1', WebSocket: null, topics: ['a'] })
  assert.equal(t.EventSource.last().url, SSE + '?app=1&topics=a')
  t.client.close()
})

test('once a WebSocket was welcomed, failures never switch to SSE', () => {
  const t = setup({ sseUrl: SSE })
  connected(t).drop()
  t.clock.advance(60_000)
  failWebSocket(t, 5)
  assert.equal(t.EventSource.sources.length, 0)
  t.client.close()
})

test('the token goes in the token query parameter; withCredentials is passed on', async () => {
  const t = setup({ sseUrl: SSE, WebSocket: null, getToken: async () => 'tok', withCredentials: true })
  await settle()
  const es = t.EventSource.last()
  assert.equal(es.query.get('token'), 'tok')
  assert.deepEqual(es.init, { withCredentials: true })
  t.client.close()
})

test('topic changes reconnect once with the new topic list and the current cursors', async () => {
  const t = setup({ sseUrl: SSE, WebSocket: null, topics: ['a'] })
  const es = t.EventSource.last()
  es.receive({ type: 'welcome', heartbeat: 25000 }, { type: 'subscribed', stream: 'topic:a', epoch: 'e1', offset: 1, outcome: 'fresh' }, ev('topic:a', 2))
  t.client.subscribe('b')
  t.client.subscribe('c')
  t.client.unsubscribe('a')
  await settle()
  assert.equal(t.EventSource.sources.length, 2)
  assert.ok(es.closed)
  const next = t.EventSource.last()
  assert.equal(next.query.get('topics'), 'b,c')
  assert.equal(next.query.get('since'), null)
  t.client.subscribe('a')
  await settle()
  assert.equal(t.EventSource.last().query.get('topics'), 'b,c,a')
  assert.deepEqual(JSON.parse(t.EventSource.last().query.get('since')), { 'topic:a': { epoch: 'e1', offset: 2 } })
  t.client.close()
})

test('an SSE error reconnects with backoff and fresh cursors (not the URL ones)', () => {
  const t = setup({ sseUrl: SSE, WebSocket: null })
  const es = t.EventSource.last()
  es.receive({ type: 'welcome', heartbeat: 25000 }, { type: 'subscribed', stream: 'all', epoch: 'e1', offset: 1, outcome: 'fresh' }, ev('all', 7))
  es.fail()
  assert.ok(es.closed, 'the browser must not reconnect with the old since')
  assert.equal(t.client.status, 'reconnecting')
  t.clock.advance(1000)
  assert.deepEqual(JSON.parse(t.EventSource.last().query.get('since')), { all: { epoch: 'e1', offset: 7 } })
  t.client.close()
})

test('an unauthorized error message over SSE stops like 4401', () => {
  const t = setup({ sseUrl: SSE, WebSocket: null })
  const es = t.EventSource.last()
  es.receive({ type: 'error', code: 'unauthorized', message: 'token expired' })
  assert.equal(t.client.status, 'closed')
  assert.equal(t.client.error.code, 4401)
  assert.ok(es.closed)
  assert.equal(t.clock.pending(), 0)
  assert.deepEqual(t.seen.error.map((m) => m.code), ['unauthorized'])
  t.client.close()
})

test('other error messages over SSE (a hook that failed, an expired token) reconnect with backoff', () => {
  for (const code of ['internal_error', 'token_expired', 'bad_request', 'try_again_later']) {
    const t = setup({ sseUrl: SSE, WebSocket: null })
    const es = t.EventSource.last()
    es.receive({ type: 'error', code, message: 'x' })
    assert.notEqual(t.client.status, 'closed', code)
    es.fail() // the server ends the response: EventSource reports an error
    assert.ok(es.closed, code)
    assert.equal(t.client.status, 'connecting', code)
    t.clock.advance(1000)
    assert.equal(t.EventSource.sources.length, 2, code)
    t.client.close()
  }
})

test('the watchdog also guards SSE', () => {
  const t = setup({ sseUrl: SSE, WebSocket: null })
  const es = t.EventSource.last()
  es.receive({ type: 'welcome', heartbeat: 1000 })
  t.clock.advance(3000)
  assert.ok(es.closed)
  assert.equal(t.client.status, 'reconnecting')
  t.client.close()
})

test('expiring over SSE: reconnects at once with a fresh token and the cursors', async () => {
  let n = 0
  const t = setup({ sseUrl: SSE, WebSocket: null, getToken: async () => `token-${++n}` })
  await settle()
  const first = t.EventSource.last()
  assert.equal(first.query.get('token'), 'token-1')
  first.receive(
    { type: 'welcome', v: 1, conn: 'c', user: 'u', heartbeat: 25000 },
    { type: 'subscribed', stream: 'all', epoch: 'e1', offset: 4, outcome: 'fresh' },
  )
  first.receive({ type: 'expiring', expires_in: 30000 })
  await settle()
  assert.ok(first.closed)
  const second = t.EventSource.last()
  assert.notEqual(second, first)
  assert.equal(second.query.get('token'), 'token-2')
  assert.deepEqual(JSON.parse(second.query.get('since')), { all: { epoch: 'e1', offset: 4 } })
  t.client.close()
})
