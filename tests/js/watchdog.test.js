// The heartbeat watchdog and the page's state (network, visibility, focus). A background tab
// may never run the watchdog's timer: `clock.jump` moves time without running timers.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connected, fakeEnv, setup } from './helpers.js'

const HB = 10000
const DEADLINE = 2 * HB + 1000 // 2 * heartbeat + margin

test('the timer declares the connection dead after 2 * heartbeat + margin of silence', () => {
  const t = setup()
  const ws = connected(t, HB)
  t.clock.advance(DEADLINE - 1)
  assert.equal(t.client.status, 'connected')
  t.clock.advance(1)
  assert.equal(t.client.status, 'reconnecting')
  assert.equal(ws.closeCode, 1000)
  assert.equal(ws.handlers, 0)
  t.client.close()
})

test('a heartbeat shorter than the connect timeout re-arms the timer earlier', () => {
  const t = setup({ connectTimeout: 20000 })
  connected(t, 1000)
  t.clock.advance(3000)
  assert.equal(t.client.status, 'reconnecting')
  t.client.close()
})

test('every message moves the deadline', () => {
  const t = setup()
  const ws = connected(t, HB)
  for (let i = 0; i < 10; i++) {
    t.clock.advance(DEADLINE - 1)
    ws.receive({ type: 'ping' })
  }
  assert.equal(t.client.status, 'connected')
  assert.equal(t.clock.pending(), 1, 'one watchdog timer, not one per message')
  t.client.close()
})

test('a message arriving after a stale deadline reconnects, even if no timer ran', () => {
  const t = setup()
  const ws = connected(t, HB)
  t.clock.jump(DEADLINE + 5000) // throttled: the timer never fired
  ws.receive({ stream: 'all', epoch: 'e1', offset: 3, type: 'invalidate', keys: [['x']] })
  assert.equal(t.client.status, 'reconnecting')
  assert.equal(t.seen.event.length, 0, 'the late frame is not applied: the resume replays it')
  assert.equal(ws.handlers, 0)
  t.client.close()
})

test('a stale deadline is noticed before a send', () => {
  const t = setup()
  const ws = connected(t, HB)
  const sent = ws.sent.length
  t.clock.jump(DEADLINE)
  t.client.subscribe('jobs')
  assert.equal(ws.sent.length, sent, 'nothing sent on a dead socket')
  assert.equal(t.client.status, 'reconnecting')
  t.clock.advance(1000)
  t.ws().open()
  assert.deepEqual(t.ws().sent[0].topics, ['jobs'])
  t.client.close()
})

test('becoming visible notices a stale deadline and reconnects at once', () => {
  const t = setup()
  connected(t, HB)
  t.env.isVisible = false
  t.env.fire('visibilitychange')
  t.clock.jump(10 * 60_000)
  assert.equal(t.client.status, 'connected', 'no timer ran while hidden')
  t.env.isVisible = true
  t.env.fire('visibilitychange')
  assert.equal(t.WebSocket.sockets.length, 2, 'reconnected without waiting for a backoff')
  assert.equal(t.client.status, 'reconnecting')
  t.client.close()
})

test('focus and online also check the deadline', () => {
  for (const type of ['focus', 'online']) {
    const t = setup()
    connected(t, HB)
    t.clock.jump(DEADLINE)
    t.env.fire(type)
    assert.equal(t.WebSocket.sockets.length, 2, type)
    t.client.close()
  }
})

test('a page event with a fresh deadline changes nothing', () => {
  const t = setup()
  connected(t, HB)
  for (const type of ['visibilitychange', 'focus', 'online']) t.env.fire(type)
  assert.equal(t.WebSocket.sockets.length, 1)
  assert.equal(t.client.status, 'connected')
  t.client.close()
})

test('before the welcome, the connect timeout applies', () => {
  const t = setup({ connectTimeout: 5000 })
  t.ws().open()
  t.clock.advance(4999)
  assert.equal(t.client.status, 'connecting')
  t.clock.advance(1)
  assert.equal(t.ws().closeCode, 1000)
  assert.equal(t.clock.pending(), 1, 'only the retry')
  t.client.close()
})

test('offline: no reconnecting until online, which retries at once', () => {
  const t = setup()
  connected(t)
  t.env.isOnline = false
  t.ws().drop(1006)
  assert.equal(t.client.status, 'offline')
  assert.equal(t.clock.pending(), 0, 'no retry timer while offline')
  t.clock.advance(600_000)
  assert.equal(t.WebSocket.sockets.length, 1)
  t.env.fire('visibilitychange')
  assert.equal(t.WebSocket.sockets.length, 1, 'still offline')
  t.env.fire('online')
  assert.equal(t.WebSocket.sockets.length, 2)
  assert.equal(t.client.status, 'reconnecting')
  connected(t)
  assert.deepEqual(t.statuses, ['connected', 'offline', 'reconnecting', 'connected'])
  t.client.close()
})

test("an 'offline' event pauses a pending retry", () => {
  const t = setup()
  connected(t).drop()
  assert.equal(t.clock.pending(), 1)
  t.env.fire('offline')
  assert.equal(t.client.status, 'offline')
  assert.equal(t.clock.pending(), 0)
  t.env.fire('online')
  assert.equal(t.WebSocket.sockets.length, 2)
  t.client.close()
})

test("an 'offline' event keeps a connection that still answers (localhost, intranet)", () => {
  const t = setup()
  const ws = connected(t)
  t.env.fire('offline')
  assert.deepEqual(ws.sent.at(-1), { type: 'ping' })
  t.clock.advance(2900)
  ws.receive({ type: 'pong' })
  t.clock.advance(10_000)
  assert.equal(t.client.status, 'connected')
  t.client.close()
})

test("an 'offline' event drops, within the probe time, a connection that no longer answers", () => {
  const t = setup()
  const ws = connected(t)
  t.env.isOnline = false
  t.env.fire('offline')
  t.clock.advance(3001) // not the ~51 s of the heartbeat watchdog
  assert.equal(t.client.status, 'offline')
  assert.equal(ws.closeCode, 1000)
  t.env.isOnline = true
  t.env.fire('online')
  assert.equal(t.WebSocket.sockets.length, 2)
  t.client.close()
})

test('starting offline waits for online', () => {
  const env = fakeEnv()
  env.isOnline = false
  const t = setup({ env })
  assert.equal(t.client.status, 'offline')
  assert.equal(t.WebSocket.sockets.length, 0)
  t.env.fire('online')
  assert.equal(t.WebSocket.sockets.length, 1)
  t.client.close()
})

test('becoming visible retries at once while waiting for a backoff', () => {
  const t = setup({ base: 60_000, random: () => 0.9 })
  connected(t).drop()
  t.env.isVisible = false
  t.env.fire('visibilitychange')
  assert.equal(t.WebSocket.sockets.length, 1, 'hidden: keep waiting')
  t.env.isVisible = true
  t.env.fire('visibilitychange')
  assert.equal(t.WebSocket.sockets.length, 2)
  assert.equal(t.clock.pending(), 1, 'the retry timer was replaced by the watchdog')
  t.client.close()
})
