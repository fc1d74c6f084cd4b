// The connection status: a pill in the header, and a banner while live updates are down.
import { useConnectionState, useLive, useMe } from './live.jsx'

const PILL = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  polling: 'Polling',
  expired: 'Signed out',
  closed: 'Stopped',
}

export function StatusPill() {
  const state = useConnectionState()
  const live = useLive()
  const sse = state === 'live' && live.transport === 'sse'
  return (
    <span id="live-status" className={`pill ${state}`} data-state={state} role="status">
      <span className="dot" /> {PILL[state]}
      {sse && ' (SSE)'}
    </span>
  )
}

export function Banner() {
  const state = useConnectionState()
  const live = useLive()
  const me = useMe()
  const retry = (
    <button type="button" className="link" onClick={() => live.reconnect()}>
      Retry now
    </button>
  )
  const text = {
    reconnecting: <>Connection lost: reconnecting. What you see may be out of date. {retry}</>,
    offline: <>You are offline. Updates resume when the network is back.</>,
    polling: (
      <>
        Live updates are unavailable: refreshing every {me.polling_ms / 1000} s. {retry}
      </>
    ),
    expired: (
      <>
        Your session expired. <a href="/login">Sign in again</a>
      </>
    ),
  }[state]
  if (!text) return null
  return (
    <div className={`banner ${state}`} data-state={state}>
      {text}
    </div>
  )
}
