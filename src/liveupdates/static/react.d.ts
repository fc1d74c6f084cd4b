// Types of react.js: the React entry (React is a peer dependency).
import type { ReactElement, ReactNode } from 'react'
import type { Client, ClientError, Status } from './client.js'

export interface LiveUpdatesProviderProps {
  /** A client made once, outside of rendering: `createClient(...)` or `createSharedClient(...)`. */
  client: Client
  children?: ReactNode
}

export interface ConnectionState {
  status: Status
  /** Why the client stopped on its own (4401, 1000), else null. */
  error: ClientError | null
}

export function LiveUpdatesProvider(props: LiveUpdatesProviderProps): ReactElement

/** The client of the nearest LiveUpdatesProvider (throws without one). */
export function useLiveClient(): Client

/** The connection's status and error, re-rendering when they change. */
export function useConnectionState(client?: Pick<Client, 'status' | 'error' | 'onStatus'>): ConnectionState
