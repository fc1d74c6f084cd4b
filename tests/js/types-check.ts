// Compiled by `tsc --noEmit -p tests/js/tsconfig.json`: the declarations accept what the
// docs show, and refuse obvious mistakes (each @ts-expect-error must be an error).
import { QueryClient } from '@tanstack/query-core'
import { createClient, type Client, type LiveEvent, type Status } from '../../src/liveupdates/static/client.js'
import { connectQueryClient } from '../../src/liveupdates/static/tanstack.js'
import { createSharedClient } from '../../src/liveupdates/static/tabs.js'

const client: Client = createClient({
  url: '/liveupdates/ws',
  sseUrl: '/liveupdates/sse',
  topics: ['jobs'],
  getToken: async () => 'token',
})

const banner: Record<Status, string> = {
  connecting: 'Connecting…',
  connected: '',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  closed: 'Disconnected',
}
const offStatus: () => void = client.onStatus((status, error) => {
  const text: string = error?.code === 4401 ? 'Please sign in again' : banner[status]
  void text
})
offStatus()

client.on('event', (event: LiveEvent) => {
  if (event.type === 'job.failed') console.log(event.stream, event.offset, event['job_id'])
  if (event.type === 'invalidate') console.log(event.keys?.length)
})
client.on('resync', (m) => console.log(m.stream, m.reason, m.epoch, m.offset))
client.on('subscribed', (m) => console.log(m.outcome === 'recovered'))
client.on('error', (m) => console.log(m.code, m.topic))
client.on('welcome', (m) => console.log(m.user, m.heartbeat))
client.subscribe('stats')
client.unsubscribe('stats')
const cursorOffset: number | undefined = client.cursors['all']?.offset
void cursorOffset
const transport: 'websocket' | 'sse' | null = client.transport
void transport

// @ts-expect-error: not an event type
client.on('nope', () => {})
// @ts-expect-error: the url is required
createClient({ topics: ['jobs'] })
// @ts-expect-error: topics are strings
client.subscribe(7)

const queryClient = new QueryClient()
const disconnect: () => void = connectQueryClient(client, queryClient, {
  window: 50,
  scopes: { 'topic:jobs': [['jobs']], 'user:alice': [['me']] },
})
disconnect()
connectQueryClient(client, queryClient, { scopes: (stream) => (stream === 'all' ? [[]] : undefined) })
// @ts-expect-error: scopes map streams to lists of query keys
connectQueryClient(client, queryClient, { scopes: { all: ['jobs'] } })

const shared = createSharedClient({ url: '/liveupdates/ws', topics: ['jobs'] })
const leader: boolean | undefined = shared.leader
void leader
connectQueryClient(shared, queryClient)
shared.close()
client.close()

// The React entry: a provider around the app, a banner from the connection state.
import { createElement } from 'react'
import { LiveUpdatesProvider, useConnectionState, useLiveClient } from '../../src/liveupdates/static/react.js'

function LiveBanner() {
  const { status, error } = useConnectionState()
  const live: Client = useLiveClient()
  void live.topics
  return createElement('p', null, error?.code === 4401 ? 'Please sign in again' : banner[status])
}
createElement(LiveUpdatesProvider, { client }, createElement(LiveBanner))
// @ts-expect-error the provider needs a client
createElement(LiveUpdatesProvider, {})
