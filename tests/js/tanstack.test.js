// The adapter against the real @tanstack/query-core: real QueryClient, observers and fetches.
// The adapter's batching window runs on the fake clock; TanStack's own scheduling is awaited
// through its cache events, never through sleeps.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { QueryClient, QueryObserver } from '@tanstack/query-core'
import { createEmitter } from '../../src/liveupdates/static/emitter.js'
import { connectQueryClient, covers } from '../../src/liveupdates/static/tanstack.js'
import { fakeClock } from './helpers.js'

/** A query client, a fake liveupdates client to emit through, and counted queries. */
function setup(options = {}) {
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } })
  const bus = createEmitter()
  const clock = fakeClock(1000)
  const disconnect = connectQueryClient(bus, queryClient, { clock, ...options })
  const counts = new Map()
  const aborted = []
  const gates = new Map() // key -> resolvers of pending fetches held by the test
  const invalidateCalls = []
  const invalidate = queryClient.invalidateQueries.bind(queryClient)
  queryClient.invalidateQueries = (...args) => {
    invalidateCalls.push(args)
    return invalidate(...args)
  }
  const unsubscribers = []
  const h = {
    queryClient,
    bus,
    clock,
    disconnect,
    aborted,
    invalidateCalls,
    count: (key) => counts.get(JSON.stringify(key)) || 0,
    /** An active query (an observer is subscribed) whose fetches are counted. */
    observe(key, { hold = false } = {}) {
      const id = JSON.stringify(key)
      const observer = new QueryObserver(queryClient, {
        queryKey: key,
        queryFn: ({ signal }) => {
          const n = (counts.get(id) || 0) + 1
          counts.set(id, n)
          signal.addEventListener('abort', () => aborted.push(id))
          if (!hold) return Promise.resolve({ key, n })
          return new Promise((resolve) => gates.set(id, [...(gates.get(id) || []), () => resolve({ key, n })]))
        },
      })
      unsubscribers.push(observer.subscribe(() => {}))
      return observer
    },
    release(key) {
      const id = JSON.stringify(key)
      const [first, ...rest] = gates.get(id)
      gates.set(id, rest)
      first()
    },
    /** Resolves when `predicate()` holds, checked after every query cache event. */
    until(predicate) {
      return new Promise((resolve) => {
        const check = () => {
          if (!predicate()) return false
          off?.()
          resolve()
          return true
        }
        let off = null
        if (!check()) off = queryClient.getQueryCache().subscribe(check)
      })
    },
    idle: () => h.until(() => queryClient.isFetching() === 0),
    invalidate(stream, offset, keys) {
      bus.emit('event', { stream, epoch: 'e1', offset, type: 'invalidate', keys })
    },
    set(stream, offset, key, data, epoch = 'e1') {
      bus.emit('event', { stream, epoch, offset, type: 'set', key, data })
    },
    close() {
      unsubscribers.forEach((off) => off())
      disconnect()
      queryClient.clear()
    },
  }
  return h
}

test('covers: TanStack prefix and partial object matching', () => {
  assert.ok(covers(['jobs'], ['jobs', 7]))
  assert.ok(covers([], ['anything']))
  assert.ok(covers(['jobs', { page: 1 }], ['jobs', { page: 1, size: 10 }]))
  assert.ok(!covers(['jobs', 7], ['jobs']))
  assert.ok(!covers(['jobs', 7], ['jobs', '7']))
  assert.ok(!covers(['jobs', { page: 2 }], ['jobs', { page: 1 }]))
})

test('overlapping invalidations within the window: one invalidateQueries, each query refetched once', async () => {
  const h = setup()
  const keys = [['jobs'], ['jobs', 1], ['jobs', 2], ['stats'], ['other']]
  keys.forEach((key) => h.observe(key))
  await h.idle()
  assert.deepEqual(keys.map(h.count), [1, 1, 1, 1, 1])

  h.invalidate('topic:jobs', 1, [['jobs', 1]])
  h.clock.advance(10)
  h.invalidate('topic:jobs', 2, [['jobs'], ['stats']])
  h.clock.advance(10)
  h.invalidate('all', 1, [['jobs', 2], ['jobs']])
  h.bus.emit('event', { stream: 'all', epoch: 'e1', offset: 2, type: 'job.failed' }) // not for the cache
  assert.equal(h.invalidateCalls.length, 0, 'nothing before the window ends')
  h.clock.advance(50)
  assert.equal(h.invalidateCalls.length, 1)
  assert.equal(h.invalidateCalls[0][1].cancelRefetch, false)
  await h.idle()
  assert.deepEqual(keys.map(h.count), [2, 2, 2, 2, 1])
  assert.deepEqual(h.aborted, [], 'no fetch was cancelled')
  h.close()
})

test('a window after the first one is a new batch', async () => {
  const h = setup({ window: 20 })
  h.observe(['a'])
  await h.idle()
  h.invalidate('all', 1, [['a']])
  h.clock.advance(20)
  await h.idle()
  h.invalidate('all', 2, [['a']])
  h.clock.advance(20)
  await h.idle()
  assert.equal(h.count(['a']), 3)
  assert.equal(h.invalidateCalls.length, 2)
  h.close()
})

test('inactive queries are marked stale, not refetched', async () => {
  const h = setup()
  await h.queryClient.prefetchQuery({ queryKey: ['cold'], queryFn: () => 'v' })
  h.invalidate('all', 1, [['cold']])
  h.clock.advance(50)
  assert.equal(h.queryClient.getQueryState(['cold']).isInvalidated, true)
  assert.equal(h.queryClient.isFetching(), 0)
  h.close()
})

test('resync invalidates the scope of its stream, or everything without one', async () => {
  const h = setup({ scopes: { 'topic:jobs': [['jobs']], 'user:alice': [['me'], ['jobs', 'mine']] } })
  const keys = [['jobs'], ['jobs', 'mine'], ['me'], ['stats']]
  keys.forEach((key) => h.observe(key))
  await h.idle()

  h.bus.emit('resync', { type: 'resync', stream: 'topic:jobs', epoch: 'e1', offset: 9, reason: 'overflow' })
  h.bus.emit('resync', { type: 'subscribed', stream: 'user:alice', epoch: 'e2', offset: 0, outcome: 'resync', reason: 'epoch' })
  h.clock.advance(50)
  await h.idle()
  assert.deepEqual(keys.map(h.count), [2, 2, 2, 1])

  h.bus.emit('resync', { type: 'resync', stream: 'all', epoch: 'e1', offset: 3, reason: 'backplane' })
  h.clock.advance(50)
  await h.idle()
  assert.deepEqual(keys.map(h.count), [3, 3, 3, 2])
  h.close()
})

test('scopes may be a function of the stream', async () => {
  const h = setup({ scopes: (stream) => (stream.startsWith('topic:job:') ? [['jobs', Number(stream.slice(10))]] : undefined) })
  h.observe(['jobs', 7])
  h.observe(['jobs', 8])
  await h.idle()
  h.bus.emit('resync', { stream: 'topic:job:7', epoch: 'e1', offset: 1 })
  h.clock.advance(50)
  await h.idle()
  assert.deepEqual([h.count(['jobs', 7]), h.count(['jobs', 8])], [2, 1])
  h.close()
})

test('set patches existing entries only', () => {
  const h = setup()
  const qc = h.queryClient
  qc.setQueryData(['jobs', 7, 'progress'], { done: 1 }, { updatedAt: 500 })
  h.set('user:alice', 1, ['jobs', 7, 'progress'], { done: 5 })
  h.set('user:alice', 2, ['jobs', 8, 'progress'], { done: 9 })
  h.set('user:alice', 3, ['jobs', 7], { nope: true }) // a prefix, not this key: no entry
  h.clock.advance(50)
  assert.deepEqual(qc.getQueryData(['jobs', 7, 'progress']), { done: 5 })
  assert.equal(qc.getQueryData(['jobs', 8, 'progress']), undefined)
  assert.equal(qc.getQueryCache().find({ queryKey: ['jobs', 8, 'progress'], exact: true }), undefined, 'no entry created')
  assert.equal(qc.getQueryData(['jobs', 7]), undefined)
  h.close()
})

test('set: the newest of a window wins, and an older offset never overwrites a newer one', () => {
  const h = setup()
  const qc = h.queryClient
  const key = ['p']
  qc.setQueryData(key, 0, { updatedAt: 500 })
  h.set('topic:jobs', 5, key, 50)
  h.set('topic:jobs', 6, key, 60)
  h.clock.advance(50)
  assert.equal(qc.getQueryData(key), 60)
  h.set('topic:jobs', 4, key, 40) // older (a replay from another tab's leader, say)
  h.clock.advance(50)
  assert.equal(qc.getQueryData(key), 60)
  h.set('topic:jobs', 7, key, 70)
  h.clock.advance(50)
  assert.equal(qc.getQueryData(key), 70)
  h.set('topic:jobs', 1, key, 10, 'e2') // a new epoch is not comparable: newest arrival wins
  h.clock.advance(50)
  assert.equal(qc.getQueryData(key), 10)
  h.close()
})

test('set never overwrites data fetched after the event arrived', () => {
  const h = setup()
  const qc = h.queryClient
  const key = ['p']
  qc.setQueryData(key, 'old', { updatedAt: 500 })
  h.set('all', 1, key, 'from event') // arrives at 1000
  qc.setQueryData(key, 'fetched', { updatedAt: 1020 }) // a fetch completes inside the window
  h.clock.advance(50)
  assert.equal(qc.getQueryData(key), 'fetched')
  h.close()
})

test('an invalidation during the first fetch refetches after that fetch settles', async () => {
  const h = setup()
  const key = ['slow']
  h.observe(key, { hold: true })
  assert.equal(h.count(key), 1)
  assert.equal(h.queryClient.getQueryState(key).status, 'pending')
  h.invalidate('all', 1, [key])
  h.clock.advance(50)
  assert.equal(h.count(key), 1, 'TanStack keeps the running fetch')
  h.release(key)
  await h.until(() => h.clock.pending() > 0) // the adapter noticed the settled fetch
  h.clock.advance(50)
  assert.equal(h.count(key), 2, 'refetched once after the first fetch')
  h.release(key)
  await h.idle()
  assert.equal(h.count(key), 2)
  assert.equal(h.clock.pending(), 0, 'and only once')
  assert.deepEqual(h.queryClient.getQueryData(key), { key, n: 2 })
  assert.deepEqual(h.aborted, [])
  h.close()
})

test('an invalidation during a refetch also refetches after it, without aborting it', async () => {
  const h = setup()
  const key = ['k']
  h.observe(key, { hold: true })
  h.release(key)
  await h.idle()
  h.queryClient.refetchQueries({ queryKey: key }) // a refetch started before the change
  assert.equal(h.count(key), 2)
  h.invalidate('all', 1, [key])
  h.clock.advance(50)
  assert.equal(h.count(key), 2)
  h.release(key)
  await h.until(() => h.clock.pending() > 0)
  h.clock.advance(50)
  assert.equal(h.count(key), 3)
  h.release(key)
  await h.idle()
  assert.deepEqual(h.aborted, [])
  h.close()
})

test('disconnect stops listening and clears the pending window', () => {
  const h = setup()
  h.invalidate('all', 1, [['x']])
  assert.equal(h.clock.pending(), 1)
  h.disconnect()
  assert.equal(h.clock.pending(), 0)
  h.invalidate('all', 2, [['x']])
  assert.equal(h.clock.pending(), 0)
  h.close()
})

test('with a real liveupdates client', async () => {
  const { setup: clientSetup, connected, ev } = await import('./helpers.js')
  const t = clientSetup()
  const queryClient = new QueryClient()
  const disconnect = connectQueryClient(t.client, queryClient, { clock: t.clock })
  let fetches = 0
  const observer = new QueryObserver(queryClient, { queryKey: ['jobs'], queryFn: async () => ++fetches, staleTime: Infinity })
  const off = observer.subscribe(() => {})
  await new Promise((resolve) => {
    const stop = queryClient.getQueryCache().subscribe(() => queryClient.isFetching() === 0 && (stop(), resolve()))
  })
  const ws = connected(t)
  ws.receive(ev('all', 1, { keys: [['jobs']] }), ev('all', 1, { keys: [['jobs']] }), ev('all', 2, { keys: [['jobs', 1]] }))
  t.clock.advance(50)
  assert.equal(fetches, 2)
  off()
  disconnect()
  t.client.close()
  queryClient.clear()
})
