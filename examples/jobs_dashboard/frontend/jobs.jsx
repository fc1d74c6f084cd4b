// Pieces of a job shared by the list and the job page.
import { useMutation, useQueryClient } from '@tanstack/react-query'
import { api } from './api.js'
import { useLive } from './live.jsx'

export function StatusBadge({ status }) {
  return <span className={`badge ${status}`}>{status}</span>
}

export function ProgressBar({ done, total }) {
  const percent = total ? Math.round((100 * done) / total) : 0
  return (
    <div className="progress" role="progressbar" aria-valuenow={percent} aria-valuemin={0} aria-valuemax={100}>
      <div className="fill" style={{ width: `${percent}%` }} />
      <span className="count">
        {done}/{total}
      </span>
    </div>
  )
}

/**
 * A mutation of the API. Nothing to invalidate on success: the server publishes what changed
 * to every tab, this one included. Only while live updates are down do we refetch ourselves.
 */
export function useApiMutation(fn) {
  const live = useLive()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: fn,
    onSettled: () => live.status === 'connected' || queryClient.invalidateQueries(),
  })
}

export function JobActions({ job }) {
  const cancel = useApiMutation(api.cancel)
  const retry = useApiMutation(api.retry)
  const busy = cancel.isPending || retry.isPending
  return (
    <span className="actions">
      {(job.status === 'queued' || job.status === 'running') && (
        <button type="button" disabled={busy} onClick={() => cancel.mutate(job.id)}>
          Cancel
        </button>
      )}
      {(job.status === 'failed' || job.status === 'cancelled') && (
        <button type="button" disabled={busy} onClick={() => retry.mutate(job.id)}>
          Retry
        </button>
      )}
    </span>
  )
}

export function formatTime(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : '—'
}
