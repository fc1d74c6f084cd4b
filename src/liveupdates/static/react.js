// React entry: a provider that hands a client to the components below it, and a hook that
// re-renders on the connection's status (for a banner). React is a peer: `react` is the one
// bare import of the client, so this module is for bundlers (or a page with an import map).
import { createContext, createElement, useCallback, useContext, useSyncExternalStore } from 'react'

const LiveUpdatesContext = createContext(null)

/** Makes `client` (created once, outside of rendering) available to `useLiveClient()`. */
export function LiveUpdatesProvider({ client, children }) {
  if (!client) throw new TypeError('LiveUpdatesProvider needs a client (createClient or createSharedClient)')
  return createElement(LiveUpdatesContext.Provider, { value: client }, children)
}

/** The client of the nearest LiveUpdatesProvider. */
export function useLiveClient() {
  const client = useContext(LiveUpdatesContext)
  if (!client) throw new Error('useLiveClient() and useConnectionState() need a <LiveUpdatesProvider client={...}> above them')
  return client
}

/** `{status, error}` of the provider's client (or of `client`), re-rendering when it changes. */
export function useConnectionState(client) {
  const provided = useContext(LiveUpdatesContext)
  const live = client ?? provided
  if (!live) throw new Error('useLiveClient() and useConnectionState() need a <LiveUpdatesProvider client={...}> above them')
  const subscribe = useCallback((onChange) => live.onStatus(() => onChange()), [live])
  const status = useSyncExternalStore(subscribe, () => live.status, () => live.status)
  const error = useSyncExternalStore(subscribe, () => live.error, () => live.error)
  return { status, error }
}
