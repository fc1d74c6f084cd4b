// Tab sharing with fake Web Locks and a fake BroadcastChannel (and once with node's real one).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createSharedClient } from '../../src/liveupdates/static/tabs.js'
import { ev, fakeBroadcast, fakeClock, fakeEnv, fakeLocks, fakeWebSocket, settle } from './helpers.js'

/** A browser: shared fakes; `tab(options)` opens a tab (a shared client) in it. */
function browser(extra = {}) {
  const b = {
    clock: fakeClock(),
    env: fakeEnv(),
    WebSocket: fakeWebSocket(),
    locks: fakeLocks(),
    BroadcastChannel: fakeBroadcast(),
    ...extra,
  }
  let n = 0
  b.tab = (options = {}) => {
    const client = createSharedClient({ url: 'ws://test/ws', clock: b.clock, env: b.env, WebSocket: b.WebSocket, locks: b.locks, BroadcastChannel: b.BroadcastChannel, random: () => ++n / 10, ...options })
    const seen = { event: [], status: [], resync: [], subscribed: [] }
    for (const type of ['event', 'resync', 'subscribed']) client.on(type, (m) => seen[type].push(m))
    client.onStatus((s) => seen.status.push(s))
    return { client, seen }
  }
  b.ws = () => b.WebSocket.last()
  return b
}

const welcome = (ws, user = 'alice') => {
  ws.open()
  ws.welcome(25000, user)
}
const subscribed = (stream, offset) => ({ type: 'subscribed', stream, epoch: 'e1', offset, outcome: 'fresh' })

test('without Web Locks or BroadcastChannel every tab gets its own client', () => {
  for (const missing of [{ locks: null }, { BroadcastChannel: null }]) {
    const b = browser(missing)
    const t1 = b.tab()
    const t2 = b.tab()
    assert.equal(b.WebSocket.sockets.length, 2)
    assert.equal('leader' in t1.client, false)
    t1.client.close()
    t2.client.close()
  }
})

test('one socket for all tabs; every tab gets the messages and the status', async () => {
  const b = browser()
  const a = b.tab()
  await settle()
  const c = b.tab()
  await settle()
  assert.equal(b.WebSocket.sockets.length, 1)
  assert.equal(a.client.leader, true)
  assert.equal(c.client.leader, false)
  welcome(b.ws())
  b.ws().receive(subscribed('all', 0), subscribed('user:alice', 0), ev('all', 1), ev('user:alice', 1, { type: 'set', key: ['p'], data: 5 }))
  await settle()
  for (const tab of [a, c]) {
    assert.equal(tab.client.status, 'connected')
    assert.deepEqual(tab.seen.event.map((e) => `${e.stream}@${e.offset}`), ['all@1', 'user:alice@1'])
    assert.deepEqual(tab.client.cursors, { all: { epoch: 'e1', offset: 1 }, 'user:alice': { epoch: 'e1', offset: 1 } })
  }
  assert.deepEqual(c.seen.status, ['connected'])
  b.ws().drop(1006)
  await settle()
  assert.equal(c.client.status, 'reconnecting')
  a.client.close()
  c.client.close()
})

test("a follower's topics are subscribed by the leader; each tab sees only its own topics", async () => {
  const b = browser()
  const a = b.tab({ topics: ['a'] })
  await settle()
  welcome(b.ws())
  const c = b.tab({ topics: ['c'] })
  await settle()
  assert.deepEqual(b.ws().sent.slice(1), [{ type: 'subscribe', topic: 'c', id: 1 }])
  assert.equal(c.client.status, 'connected', 'a new tab learns the status')
  b.ws().receive(subscribed('topic:c', 3), ev('topic:a', 1), ev('topic:c', 4), ev('all', 1))
  await settle()
  assert.deepEqual(a.seen.event.map((e) => e.stream), ['topic:a', 'all'])
  assert.deepEqual(c.seen.event.map((e) => e.stream), ['topic:c', 'all'])
  assert.deepEqual(c.seen.subscribed.map((m) => m.stream), ['topic:c'])
  c.client.subscribe('a') // already subscribed by the leader: nothing to send
  c.client.unsubscribe('c')
  await settle()
  assert.deepEqual(b.ws().sent.slice(2), [{ type: 'unsubscribe', topic: 'c', id: 2 }])
  a.client.unsubscribe('a') // still wanted by the other tab
  await settle()
  assert.equal(b.ws().sent.length, 3)
  a.client.close()
  c.client.close()
})

test('a closing follower says bye and its topics are dropped', async () => {
  const b = browser()
  const a = b.tab()
  await settle()
  welcome(b.ws())
  const c = b.tab({ topics: ['x'] })
  await settle()
  c.client.close()
  await settle()
  assert.deepEqual(b.ws().sent.slice(1).map((m) => `${m.type} ${m.topic}`), ['subscribe x', 'unsubscribe x'])
  assert.equal(c.client.status, 'closed')
  a.client.close()
})

test('when the leader closes another tab takes over and resumes from the newest cursors', async () => {
  const b = browser()
  const a = b.tab({ topics: ['a'] })
  await settle()
  const c = b.tab({ topics: ['c'] })
  const d = b.tab({ topics: ['d'] })
  await settle()
  welcome(b.ws())
  b.ws().receive(subscribed('all', 0), subscribed('topic:a', 0), subscribed('topic:c', 0), subscribed('topic:d', 0))
  b.ws().receive(ev('all', 7), ev('topic:c', 3), ev('topic:a', 2))
  await settle()
  const first = b.ws()
  a.client.close()
  assert.equal(first.closeCode, 1000)
  await settle()
  assert.equal(b.WebSocket.sockets.length, 2, 'a new socket, at once')
  assert.equal(c.client.leader, true)
  const ws = b.ws()
  ws.open()
  // the remaining follower announced its topics to the new leader before the socket opened
  assert.deepEqual(ws.sent, [
    {
      type: 'hello',
      v: 1,
      topics: ['c', 'd'],
      since: { all: { epoch: 'e1', offset: 7 }, 'topic:c': { epoch: 'e1', offset: 3 }, 'topic:d': { epoch: 'e1', offset: 0 } },
    },
  ])
  ws.welcome(25000, 'alice')
  ws.receive(ev('all', 7), ev('all', 8)) // 7 replayed: a duplicate for every tab
  await settle()
  assert.deepEqual(c.seen.event.filter((e) => e.stream === 'all').map((e) => e.offset), [7, 8])
  assert.deepEqual(d.seen.event.filter((e) => e.stream === 'all').map((e) => e.offset), [7, 8])
  assert.equal(d.client.status, 'connected')
  assert.deepEqual(d.seen.status, ['connected', 'reconnecting', 'connected'], 'the old leader closing is not the followers closing')
  c.client.close()
  d.client.close()
  await settle()
  assert.equal(b.BroadcastChannel.open(), 0)
  assert.equal(b.clock.pending(), 0)
})

test('a tab closed before its lock is granted never connects', async () => {
  const b = browser()
  const a = b.tab()
  a.client.close() // the grant is still on its way
  await settle()
  assert.equal(b.WebSocket.sockets.length, 0)
  assert.equal(b.locks.holders('liveupdates ws://test/ws'), 0)
  const c = b.tab()
  await settle()
  assert.equal(c.client.leader, true, 'the lock was released')
  c.client.close()
})

test("a follower's reconnect() reaches the leader", async () => {
  const b = browser()
  const a = b.tab()
  await settle()
  const c = b.tab()
  await settle()
  welcome(b.ws())
  b.ws().drop(4401)
  await settle()
  assert.equal(c.client.status, 'closed')
  assert.equal(c.client.error.code, 4401)
  c.client.reconnect()
  await settle()
  assert.equal(b.WebSocket.sockets.length, 2)
  assert.equal(c.client.status, 'reconnecting')
  assert.equal(c.client.error, null)
  a.client.close()
  c.client.close()
})

test("with node's real BroadcastChannel", async () => {
  const b = browser({ BroadcastChannel: globalThis.BroadcastChannel })
  const a = b.tab({ name: 'real-bc-test' })
  await settle()
  const c = b.tab({ name: 'real-bc-test', topics: ['c'] })
  const next = (tab, type) => new Promise((resolve) => {
    const off = tab.client.on(type, (m) => {
      off()
      resolve(m)
    })
  })
  const subscribing = new Promise((resolve) => {
    const ws = b.ws()
    const send = ws.send.bind(ws)
    ws.send = (text) => {
      send(text)
      if (JSON.parse(text).type === 'subscribe') resolve()
    }
  })
  welcome(b.ws())
  await subscribing
  const got = next(c, 'event')
  b.ws().receive(ev('topic:c', 1))
  assert.deepEqual((await got).stream, 'topic:c')
  a.client.close()
  c.client.close()
})
