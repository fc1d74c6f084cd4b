// The live connection of a signed-in user, as the liveupdates docs recommend: one connection
// shared by every tab (tabs.js), plugged into TanStack Query (tanstack.js), and a status that
// drives the banner and, when neither WebSocket nor SSE works, polling with refetchInterval.
import { skipToken, useQuery, useQueryClient } from '@tanstack/react-query'
import { createContext, useContext, useEffect, useState, useSyncExternalStore } from 'react'
import { createSharedClient } from '/static/liveupdates/tabs.js'
import { connectQueryClient } from '/static/liveupdates/tanstack.js'

const LiveContext = createContext(null)

export function LiveProvider({ me, children }) {
  const queryClient = useQueryClient()
  const [live, setLive] = useState(null)
  useEffect(() => {
    const client = createSharedClient({
      url: me.live.url,
      sseUrl: me.live.sse_url ?? undefined, // the fallback when WebSocket cannot connect
      topics: me.admin ? ['admin'] : [],
      name: `jobs-dashboard ${me.user}`, // tabs of one user share one connection
    })
    // Invalidations arriving within 50 ms refetch each query once; `set` patches progress.
    // A resync (missed events that cannot be replayed, a server restart) refetches every
    // job and stats query.
    const disconnect = connectQueryClient(client, queryClient, {
      scopes: (stream) => (stream === 'all' ? [] : [['jobs'], ['stats']]),
    })
    setLive(client)
    return () => {
      disconnect()
      client.close()
    }
  }, [me.user, me.admin, me.live.url, me.live.sse_url, queryClient])
  if (!live) return null
  return <LiveContext.Provider value={{ live, me }}>{children}</LiveContext.Provider>
}

export function useLive() {
  return useContext(LiveContext).live
}

export function useMe() {
  return useContext(LiveContext).me
}

/** 'connecting', 'live', 'reconnecting', 'offline', 'polling', 'expired' or 'closed'. */
export function useConnectionState() {
  const { live, me } = useContext(LiveContext)
  const status = useSyncExternalStore(live.onStatus, () => live.status)
  const down = status === 'connecting' || status === 'reconnecting'
  const [longDown, setLongDown] = useState(false)
  useEffect(() => {
    setLongDown(false)
    if (!down) return
    // Down this long (reconnecting, or never connected): neither WebSocket nor SSE works.
    const timer = setTimeout(() => setLongDown(true), me.polling_after_ms)
    return () => clearTimeout(timer)
  }, [down, me.polling_after_ms])
  if (status === 'connected') return 'live'
  if (status === 'closed') return live.error?.code === 4401 ? 'expired' : 'polling'
  if (status === 'offline') return 'offline'
  return longDown ? 'polling' : status
}

/** The `refetchInterval` of every query: none while live updates flow. */
export function usePolling() {
  const me = useMe()
  return useConnectionState() === 'polling' ? me.polling_ms : false
}

/** A running job's progress: the newest of the list's row and the server's `Set` events
 * (the row alone once the job is no longer running, a cancel or retry shown in advance too). */
export function useProgress(job) {
  const { data } = useQuery({
    queryKey: ['jobs', job.id, 'progress'],
    queryFn: skipToken, // never fetched: written by Set(["jobs", id, "progress"], ...)
    initialData: () => ({ done: job.done, total: job.total, message: job.message, rev: job.rev }),
    staleTime: Infinity,
  })
  return job.status === 'running' && data && data.rev > job.rev ? data : job
}

/** Calls `fn(event)` for every application event of type `type`. */
export function useLiveEvent(type, fn) {
  const live = useLive()
  useEffect(() => live.on('event', (event) => event.type === type && fn(event)), [live, type, fn])
}
