// Toasts for jobs that completed or failed, from the server's `job.finished` events. A burst
// (a hundred jobs finishing) collapses into one summary toast instead of a wall of them. They
// sit in a dock below the page (style.css), never over it: no button is ever under a toast.
import { useCallback, useState } from 'react'
import { useLiveEvent } from './live.jsx'
import { Link } from './router.jsx'

const TOAST_MS = 8000
const MAX_TOASTS = 3

export function Toasts() {
  const [toasts, setToasts] = useState([])
  const dismiss = useCallback((key) => setToasts((ts) => ts.filter((t) => t.key !== key)), [])
  const [seen] = useState(() => new Set()) // events are delivered at least once: toast once
  const add = useCallback(
    (event) => {
      const key = `${event.id}:${event.attempt}`
      if (seen.has(key)) return
      seen.add(key)
      setToasts((ts) => (ts.length < MAX_TOASTS ? [...ts, { key, ...event }] : summarize(ts, event, key)))
      setTimeout(() => dismiss(key), TOAST_MS)
    },
    [dismiss, seen],
  )
  useLiveEvent('job.finished', add)
  return (
    <div className="toasts" aria-live="polite" aria-label="Notifications">
      {toasts.map((t) => (
        <div key={t.key} className={`toast ${t.status}`} role={t.status === 'completed' ? 'status' : 'alert'}>
          {t.summary ? (
            <>
              {t.summary.completed} jobs completed, {t.summary.failed} failed
            </>
          ) : (
            <>
              <Link to={`/jobs/${t.id}`}>{t.name}</Link>{' '}
              {t.status === 'completed' ? 'completed' : `failed: ${t.error}`}
            </>
          )}
          <button type="button" className="close" aria-label="Dismiss" onClick={() => dismiss(t.key)}>
            ×
          </button>
        </div>
      ))}
    </div>
  )
}

/** Fold every toast shown and the new event into one summary, keyed like the newest event. */
function summarize(toasts, event, key) {
  const summary = { completed: 0, failed: 0 }
  for (const t of [...toasts, event]) {
    if (t.summary) {
      summary.completed += t.summary.completed
      summary.failed += t.summary.failed
    } else summary[t.status === 'completed' ? 'completed' : 'failed'] += 1
  }
  return [{ key, summary, status: summary.failed ? 'failed' : 'completed' }]
}
