// Subscriptions are state, cursors move with every applied message, and a reconnect resumes
// every stream from its cursor.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { connected, ev, setup } from './helpers.js'

const subscribed = (stream, offset, outcome = 'fresh', fields = {}) => ({ type: 'subscribed', stream, epoch: 'e1', offset, outcome, reason: null, ...fields })

test('hello carries the topics and the cursor of every stream: all, user:<id> and topics', () => {
  const t = setup({ topics: ['jobs'] })
  const ws = connected(t, 25000, 'alice')
  ws.receive(subscribed('all', 40), subscribed('user:alice', 4), subscribed('topic:jobs', 7))
  ws.receive(ev('all', 41), ev('topic:jobs', 9, { type: 'job.failed', job_id: 7 }), ev('user:alice', 5, { type: 'set', key: ['p'], data: 1 }))
  t.client.subscribe('stats')
  ws.receive(subscribed('topic:stats', 2))
  ws.drop(1006)
  t.clock.advance(1000)
  t.ws().open()
  assert.deepEqual(t.ws().sent[0], {
    type: 'hello',
    v: 1,
    topics: ['jobs', 'stats'],
    since: {
      all: { epoch: 'e1', offset: 41 },
      'user:alice': { epoch: 'e1', offset: 5 },
      'topic:jobs': { epoch: 'e1', offset: 9 },
      'topic:stats': { epoch: 'e1', offset: 2 },
    },
  })
  t.client.close()
})

test('subscribe and unsubscribe on an open connection send frames; the topic set is state', () => {
  const t = setup()
  const ws = connected(t)
  t.client.subscribe('jobs')
  t.client.subscribe('jobs') // already subscribed: nothing to send
  ws.receive(subscribed('topic:jobs', 3))
  ws.receive(ev('topic:jobs', 4))
  t.client.unsubscribe('jobs')
  t.client.unsubscribe('jobs')
  t.client.subscribe('jobs') // resubscribing resumes from the cursor
  assert.deepEqual(ws.sent.slice(1), [
    { type: 'subscribe', topic: 'jobs', id: 1 },
    { type: 'unsubscribe', topic: 'jobs', id: 2 },
    { type: 'subscribe', topic: 'jobs', since: { epoch: 'e1', offset: 4 }, id: 3 },
  ])
  assert.deepEqual(t.client.topics, ['jobs'])
  t.client.unsubscribe('jobs')
  ws.drop()
  t.clock.advance(1000)
  t.ws().open()
  assert.deepEqual(t.ws().sent[0].topics, [])
  assert.deepEqual(t.ws().sent[0].since, {}, 'no cursor for a topic we left')
  t.client.close()
})

test('subscriptions made while disconnected go in the next hello', () => {
  const t = setup()
  t.client.subscribe('a')
  t.ws().open()
  t.client.subscribe('b') // after hello, before welcome: sent as a frame
  t.ws().welcome()
  assert.deepEqual(t.ws().sent, [
    { type: 'hello', v: 1, topics: ['a'], since: {} },
    { type: 'subscribe', topic: 'b', id: 1 },
  ])
  t.ws().drop()
  t.client.subscribe('c')
  t.clock.advance(1000)
  t.ws().open()
  assert.deepEqual(t.ws().sent[0].topics, ['a', 'b', 'c'])
  t.client.close()
})

test('duplicates (offset <= cursor in the same epoch) are dropped', () => {
  const t = setup()
  const ws = connected(t)
  ws.receive(subscribed('all', 10))
  ws.receive(ev('all', 9), ev('all', 10), ev('all', 11), ev('all', 11), ev('all', 15), ev('all', 12))
  assert.deepEqual(t.seen.event.map((e) => e.offset), [11, 15])
  // another epoch is not comparable: applied
  ws.receive(ev('all', 1, {}, 'e2'), ev('all', 1, {}, 'e2'))
  assert.deepEqual(t.seen.event.map((e) => e.offset), [11, 15, 1])
  assert.deepEqual(t.client.cursors.all, { epoch: 'e2', offset: 1 })
  t.client.close()
})

test('events replayed after a reconnect are not applied twice', () => {
  const t = setup({ topics: ['jobs'] })
  let ws = connected(t)
  ws.receive(subscribed('topic:jobs', 1), ev('topic:jobs', 2), ev('topic:jobs', 3))
  ws.drop()
  t.clock.advance(1000)
  ws = connected(t)
  assert.deepEqual(ws.sent[0].since['topic:jobs'], { epoch: 'e1', offset: 3 })
  ws.receive(subscribed('topic:jobs', 3, 'recovered'), ev('topic:jobs', 3), ev('topic:jobs', 6))
  assert.deepEqual(t.seen.event.map((e) => e.offset), [2, 3, 6])
  t.client.close()
})

test('recovered keeps the cursor: the replay that follows is applied even if offset is the head', () => {
  const t = setup({ cursors: { all: { epoch: 'e1', offset: 5 } } })
  const ws = connected(t)
  assert.deepEqual(ws.sent[0].since, { all: { epoch: 'e1', offset: 5 } })
  ws.receive(subscribed('all', 9, 'recovered'), ev('all', 8))
  assert.deepEqual(t.seen.event.map((e) => e.offset), [8])
  t.client.close()
})

test('subscribed outcomes reach listeners; a resync outcome is also a resync', () => {
  const t = setup()
  const ws = connected(t)
  ws.receive(subscribed('all', 1), subscribed('topic:a', 2, 'recovered'), subscribed('topic:b', 90, 'resync', { reason: 'expired', epoch: 'e2' }))
  assert.deepEqual(t.seen.subscribed.map((m) => m.outcome), ['fresh', 'recovered', 'resync'])
  assert.deepEqual(t.seen.resync.map((m) => [m.stream, m.reason]), [['topic:b', 'expired']])
  assert.deepEqual(t.client.cursors['topic:b'], { epoch: 'e2', offset: 90 })
  t.client.close()
})

test('a resync message is surfaced and moves the cursor', () => {
  const t = setup()
  const ws = connected(t)
  ws.receive(subscribed('all', 10), ev('all', 11))
  ws.receive({ type: 'resync', stream: 'all', epoch: 'e1', offset: 90, reason: 'overflow' }, ev('all', 90), ev('all', 91))
  assert.deepEqual(t.seen.resync.map((m) => m.reason), ['overflow'])
  assert.deepEqual(t.seen.event.map((e) => e.offset), [11, 91])
  assert.deepEqual(t.client.cursors.all, { epoch: 'e1', offset: 91 })
  t.client.close()
})

test('server errors reach listeners and the connection stays open', () => {
  const t = setup()
  const ws = connected(t)
  t.client.subscribe('admin')
  ws.receive({ type: 'error', code: 'forbidden', message: 'no', topic: 'admin', id: 1 })
  assert.deepEqual(t.seen.error.map((m) => m.code), ['forbidden'])
  assert.equal(t.client.status, 'connected')
  t.client.close()
})

test('unknown fields and unknown message types are ignored', () => {
  const t = setup()
  const ws = connected(t)
  ws.receive({ type: 'lu.future', x: 1 }, { ...ev('all', 1), extra: true })
  assert.equal(t.seen.event.length, 1)
  assert.equal(t.client.status, 'connected')
  t.client.close()
})

test("another user's cursor is forgotten after a welcome for a different user", () => {
  const t = setup({ cursors: { 'user:bob': { epoch: 'e1', offset: 3 }, all: { epoch: 'e1', offset: 1 } } })
  connected(t, 25000, 'alice')
  assert.deepEqual(Object.keys(t.client.cursors), ['all'])
  t.client.close()
})

test('a listener that closes the client in the middle of a frame stops the frame', () => {
  const t = setup()
  const ws = connected(t)
  t.client.on('event', () => t.client.close())
  ws.receive(ev('all', 1), ev('all', 2))
  assert.equal(t.seen.event.length, 1)
  assert.equal(t.client.status, 'closed')
  assert.equal(t.clock.pending(), 0)
})
