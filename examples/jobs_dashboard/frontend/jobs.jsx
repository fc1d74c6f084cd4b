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
      <span className="label">
        <span className="count">
          {done}/{total}
        </span>
        <span className="percent">{percent}%</span>
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

/**
 * Cancel or retry, shown at once: the job changes in every cached list and on its page before
 * the server answers (`change(job)`), and goes back as it was if the server refuses (the
 * reason shows beside the button). The server's event then brings the real state.
 */
function useOptimisticAction(fn, change) {
  const live = useLive()
  const queryClient = useQueryClient()
  return useMutation({
    mutationFn: (job) => fn(job.id),
    onMutate: async (job) => {
      await queryClient.cancelQueries({ queryKey: ['jobs'] }) // an older answer must not land
      const saved = queryClient.getQueriesData({ queryKey: ['jobs'] })
      const patch = (j) => (j.id === job.id ? { ...j, ...change(j) } : j)
      queryClient.setQueriesData({ queryKey: ['jobs', 'list'] }, (data) =>
        data && { ...data, pages: data.pages.map((page) => ({ ...page, jobs: page.jobs.map(patch) })) },
      )
      queryClient.setQueryData(['jobs', job.id], (data) => data && patch(data))
      return { saved }
    },
    onError: (_error, _job, context) => {
      for (const [key, data] of context?.saved ?? []) queryClient.setQueryData(key, data)
    },
    onSettled: () => live.status === 'connected' || queryClient.invalidateQueries(),
  })
}

const now = () => Date.now() / 1000
const CANCELLED = () => ({ status: 'cancelled', message: 'cancelled', finished_at: now() })
const RETRIED = (job) => ({
  status: 'queued', message: 'queued', error: null, done: 0, attempt: job.attempt + 1,
  started_at: null, finished_at: null,
}) // prettier-ignore

export function JobActions({ job }) {
  const cancel = useOptimisticAction(api.cancel, CANCELLED)
  const retry = useOptimisticAction(api.retry, RETRIED)
  const busy = cancel.isPending || retry.isPending
  const error = cancel.error ?? retry.error
  return (
    <span className="actions">
      {(job.status === 'queued' || job.status === 'running') && (
        <button type="button" disabled={busy} onClick={() => cancel.mutate(job)}>
          Cancel
        </button>
      )}
      {(job.status === 'failed' || job.status === 'cancelled') && (
        <button type="button" disabled={busy} onClick={() => retry.mutate(job)}>
          Retry
        </button>
      )}
      {error && !busy && (
        <span className="action-error" role="alert">
          {error.message}
        </span>
      )}
    </span>
  )
}

export function formatTime(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : '—'
}
