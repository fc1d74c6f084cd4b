import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connected, setup } from './helpers.js'

test('connects, says hello first and reports connected on welcome', () => {
  const t = setup({ topics: ['jobs'] })
  const ws = t.ws()
  assert.equal(ws.url, 'ws://test/ws')
  assert.equal(ws.protocols, 'liveupdates.v1')
  assert.equal(t.client.status, 'connecting')
  ws.open()
  assert.deepEqual(ws.sent, [{ type: 'hello', v: 1, topics: ['jobs'], since: {} }])
  ws.welcome()
  assert.equal(t.client.status, 'connected')
  assert.equal(t.client.transport, 'websocket')
  assert.deepEqual(t.statuses, ['connected'])
  t.client.close()
  assert.deepEqual(t.statuses, ['connected', 'closed'])
})

test('answers a server ping with pong', () => {
  const t = setup()
  const ws = connected(t)
  ws.receive({ type: 'ping' })
  assert.deepEqual(ws.sent.at(-1), { type: 'pong' })
  t.client.close()
})

test('a lost connection reports reconnecting and comes back', () => {
  const t = setup()
  connected(t).drop(1006)
  assert.equal(t.client.status, 'reconnecting')
  t.clock.advance(1000)
  assert.equal(t.WebSocket.sockets.length, 2)
  connected(t)
  assert.deepEqual(t.statuses, ['connected', 'reconnecting', 'connected'])
  t.client.close()
})

test('a connection refused with an error event alone (node 20) still retries', () => {
  const t = setup()
  connected(t).drop(1006)
  t.clock.advance(1000)
  const refused = t.ws()
  refused.refuse()
  assert.equal(t.client.status, 'reconnecting')
  t.clock.advance(5_000) // the backoff, well within the 20 s connect timeout
  assert.equal(t.WebSocket.sockets.length, 3)
  refused.drop(1006) // a late close of the refused socket changes nothing
  assert.equal(refused.handlers, 0)
  connected(t)
  assert.equal(t.client.status, 'connected')
  t.client.close()
})

test('goodbye: reconnects at a uniformly random moment within retry_ms', () => {
  for (const r of [0, 0.3, 0.99]) {
    const t = setup({ random: () => r, base: 1 })
    const ws = connected(t)
    ws.receive({ type: 'goodbye', retry_ms: 5000 })
    ws.drop(1001)
    assert.deepEqual(t.clock.delays(), [r * 5000])
    t.clock.advance(r * 5000 - 1)
    assert.equal(t.WebSocket.sockets.length, 1)
    t.clock.advance(1)
    assert.equal(t.WebSocket.sockets.length, 2)
    // the window applies to that one reconnect only
    t.ws().drop()
    assert.deepEqual(t.clock.delays(), [r * 1])
    t.client.close()
  }
})

test('4401 stops reconnecting and reports unauthorized; reconnect() starts again', () => {
  const t = setup()
  t.ws().open()
  t.ws().drop(4401)
  assert.equal(t.client.status, 'closed')
  assert.deepEqual(t.client.error, { code: 4401, reason: 'unauthorized' })
  assert.equal(t.clock.pending(), 0)
  assert.equal(t.env.listeners(), 0)
  t.clock.advance(600_000)
  t.env.fire('online')
  assert.equal(t.WebSocket.sockets.length, 1)
  t.client.reconnect()
  assert.equal(t.WebSocket.sockets.length, 2)
  assert.equal(t.client.error, null)
  connected(t)
  assert.deepEqual(t.statuses, ['closed:4401', 'connecting', 'connected'])
  t.client.close()
})

test('a normal close (1000) from the other end reconnects: only close() stops', () => {
  const t = setup()
  connected(t).drop(1000)
  assert.equal(t.client.status, 'reconnecting')
  t.clock.advance(1000)
  assert.equal(t.WebSocket.sockets.length, 2)
  t.client.close()
  assert.equal(t.clock.pending(), 0)
})

test('every other close code reconnects', () => {
  for (const code of [1001, 1006, 1009, 1011, 1013, 4400, 4408, 4429, 4440, 4503, 4504]) {
    const t = setup()
    connected(t).drop(code)
    assert.equal(t.client.status, 'reconnecting', String(code))
    t.clock.advance(1000)
    assert.equal(t.WebSocket.sockets.length, 2, String(code))
    t.client.close()
  }
})

test('close() leaves no timers, listeners or socket handlers behind', () => {
  const t = setup()
  const first = connected(t)
  first.drop()
  t.clock.advance(1000)
  const ws = t.ws()
  ws.open() // waiting for the welcome: watchdog armed
  assert.ok(t.clock.pending() > 0)
  t.client.close()
  assert.equal(t.client.status, 'closed')
  assert.equal(t.clock.pending(), 0)
  assert.equal(t.env.listeners(), 0)
  assert.equal(ws.handlers, 0)
  assert.equal(ws.closeCode, 1000)
  assert.equal(first.handlers, 0)
  // nothing wakes it up again
  t.env.fire('online')
  t.clock.advance(600_000)
  t.client.reconnect()
  t.client.subscribe('x')
  assert.equal(t.WebSocket.sockets.length, 2)
  assert.equal(t.client.status, 'closed')
})

test('close() while waiting for a retry clears the retry timer', () => {
  const t = setup()
  connected(t).drop()
  assert.equal(t.clock.pending(), 1)
  t.client.close()
  assert.equal(t.clock.pending(), 0)
  assert.equal(t.env.listeners(), 0)
})

test('listeners can unsubscribe; a throwing listener does not break the client', () => {
  const t = setup()
  const calls = []
  const off = t.client.onStatus((s) => calls.push(s))
  const offBoom = t.client.onStatus(() => {
    throw new Error('boom')
  })
  const errors = []
  globalThis.reportError = (err) => errors.push(err.message)
  connected(t)
  off()
  t.ws().drop()
  delete globalThis.reportError
  assert.deepEqual(calls, ['connected'])
  assert.deepEqual(errors, ['boom', 'boom'])
  assert.equal(t.client.status, 'reconnecting')
  offBoom()
  t.client.close()
})

test('a constructor error without sseUrl retries with backoff', () => {
  let n = 0
  class Broken {
    constructor() {
      n++
      throw new Error('blocked')
    }
  }
  const t = setup({ WebSocket: Broken })
  assert.equal(n, 1)
  assert.equal(t.client.status, 'connecting')
  t.clock.advance(1000)
  assert.equal(n, 2)
  t.client.close()
  assert.equal(t.clock.pending(), 0)
})
