// Types of tabs.js: one connection shared by the tabs of a browser.
import type { Client, ClientOptions } from './client.js'

export interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal }, callback: (lock: unknown) => Promise<unknown>): Promise<unknown>
}

export interface BroadcastChannelLike {
  onmessage: ((event: { data: any }) => void) | null
  postMessage(data: unknown): void
  close(): void
}

export interface SharedClientOptions extends ClientOptions {
  /** The lock and channel name (default: 'liveupdates ' + url). */
  name?: string
  locks?: LockManagerLike | null
  BroadcastChannel?: (new (name: string) => BroadcastChannelLike) | null
}

export interface SharedClient extends Client {
  /** Whether this tab holds the connection (absent without tab sharing). */
  readonly leader?: boolean
}

export function createSharedClient(options: SharedClientOptions): SharedClient
