// TanStack Query adapter: turns a client's events into cache updates. Everything that
// arrives within `window` ms is applied as one batch: `set` patches first, then one
// `invalidateQueries` call whose predicate covers every invalidated key, so each affected
// query refetches once. `@tanstack/query-core` is a peer: pass your QueryClient in.
import { systemClock } from './env.js'

/** TanStack's partial key match: `prefix` covers `key` (["jobs"] covers ["jobs", 7]). */
export function covers(prefix, key) {
  if (prefix === key) return true
  if (!prefix || !key || typeof prefix !== 'object' || typeof key !== 'object') return false
  return Object.keys(prefix).every((k) => covers(prefix[k], key[k]))
}

export function connectQueryClient(client, queryClient, options = {}) {
  const { window: wait = 50, scopes = {}, clock = systemClock } = options
  const cache = queryClient.getQueryCache()
  const patched = new WeakMap() // query -> the event that last patched it
  const inFlight = new Set() // queries invalidated while they were fetching
  let keys = []
  let again = new Set() // queries to invalidate again, their fetch having settled
  let sets = new Map() // key hash -> {event, at}
  let timer = null

  const schedule = () => {
    timer ??= clock.setTimeout(flush, wait)
  }

  function flush() {
    timer = null
    const batch = keys.filter((k, i) => !keys.some((p, j) => covers(p, k) && (j < i || !covers(k, p))))
    const queries = again
    sets.forEach(patch)
    keys = []
    again = new Set()
    sets = new Map()
    const predicate = (q) => queries.has(q) || batch.some((k) => covers(k, q.queryKey))
    if (!batch.length && !queries.size) return
    // A fetch already running may have read the data before the change, and TanStack
    // keeps it (cancelRefetch: false avoids an AbortError storm): refetch once it settles.
    cache.findAll({ predicate, fetchStatus: 'fetching' }).forEach((q) => inFlight.add(q))
    queryClient.invalidateQueries({ predicate }, { cancelRefetch: false }).catch(() => {})
  }

  function patch({ event, at }) {
    const query = cache.find({ queryKey: event.key, exact: true })
    if (query?.state.data === undefined || query.state.dataUpdatedAt > at) return
    const last = patched.get(query)
    if (last?.stream === event.stream && last.epoch === event.epoch && last.offset >= event.offset) return
    patched.set(query, event)
    queryClient.setQueryData(event.key, event.data, { updatedAt: at })
  }

  const offs = [
    client.on('event', (event) => {
      if (event.type === 'invalidate') keys.push(...event.keys)
      else if (event.type === 'set') sets.set(JSON.stringify(event.key), { event, at: clock.now() })
      else return
      schedule()
    }),
    client.on('resync', ({ stream }) => {
      keys.push(...((typeof scopes === 'function' ? scopes(stream) : scopes[stream]) || [[]]))
      schedule()
    }),
    cache.subscribe(({ type, query }) => {
      if (!inFlight.has(query)) return
      if (type === 'removed') inFlight.delete(query)
      else if (query.state.fetchStatus === 'idle') {
        inFlight.delete(query)
        again.add(query)
        schedule()
      }
    }),
  ]

  return function disconnect() {
    offs.forEach((off) => off())
    if (timer != null) clock.clearTimeout(timer)
    timer = null
  }
}
