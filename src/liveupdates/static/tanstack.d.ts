// Types of tanstack.js: the TanStack Query adapter.
import type { QueryClient, QueryKey } from '@tanstack/query-core'
import type { Client, Clock } from './client.js'

export interface ConnectOptions {
  /** Events arriving within this many ms are applied as one batch (50). */
  window?: number
  /** What a resync of a stream refetches (default: every query). */
  scopes?: Record<string, QueryKey[]> | ((stream: string) => QueryKey[] | undefined)
  clock?: Clock
}

/** Apply a client's events to `queryClient`; returns the function that disconnects them. */
export function connectQueryClient(client: Pick<Client, 'on'>, queryClient: QueryClient, options?: ConnectOptions): () => void

/** TanStack's partial key match: `prefix` covers `key`. */
export function covers(prefix: unknown, key: unknown): boolean
