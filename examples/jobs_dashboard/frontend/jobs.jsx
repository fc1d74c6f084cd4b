// Pieces of a job shared by the list and the job page.
import { useMutation, useMutationState, useQueryClient } from '@tanstack/react-query'
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

const now = () => Date.now() / 1000
/** What cancel and retry change in a job, shown before the server answers. */
const CHANGES = {
  cancel: () => ({ status: 'cancelled', message: 'cancelled', finished_at: now() }),
  retry: (job) => ({
    status: 'queued', message: 'queued', error: null, done: 0, attempt: job.attempt + 1,
    started_at: null, finished_at: null,
  }), // prettier-ignore
}

/** Replace the job `job.id` by `patch(job)` in every cached page of the list and on its page. */
function patchJob(queryClient, id, patch) {
  const each = (j) => (j.id === id ? patch(j) : j)
  queryClient.setQueriesData({ queryKey: ['jobs', 'list'] }, (data) =>
    data && { ...data, pages: data.pages.map((page) => ({ ...page, jobs: page.jobs.map(each) })) },
  )
  queryClient.setQueryData(['jobs', id], (data) => data && each(data))
}

/**
 * Cancel or retry, shown at once (TanStack Query's optimistic updates): `onMutate` changes the
 * job in every cached page and on its page before the server answers, `onError` puts back what
 * was there (the reason shows beside the button), `onSuccess` writes the server's answer. While
 * the request is out, `useShownJob` keeps the change on screen even if a refetch lands first.
 * The server's event then refetches the real state everywhere.
 */
function useJobAction(action) {
  const live = useLive()
  const queryClient = useQueryClient()
  return useMutation({
    mutationKey: ['job-action'],
    mutationFn: ({ job }) => api[action](job.id),
    onMutate: async ({ job }) => {
      await queryClient.cancelQueries({ queryKey: ['jobs'] }) // an older answer must not land
      const saved = queryClient.getQueriesData({ queryKey: ['jobs'] })
      patchJob(queryClient, job.id, (j) => ({ ...j, ...CHANGES[action](j) }))
      return { saved }
    },
    onSuccess: (fresh) => patchJob(queryClient, fresh.id, (j) => (fresh.rev >= j.rev ? fresh : j)),
    onError: (_error, _variables, context) => {
      for (const [key, data] of context?.saved ?? []) queryClient.setQueryData(key, data)
    },
    onSettled: () => live.status === 'connected' || queryClient.invalidateQueries(),
  })
}

/** `job` as the user should see it: with the change of a cancel or retry still under way. */
export function useShownJob(job) {
  const pending = useMutationState({
    filters: { mutationKey: ['job-action'], status: 'pending' },
    select: (mutation) => mutation.state.variables,
  })
  const mine = pending.findLast((variables) => variables.job.id === job.id)
  return mine ? { ...job, ...CHANGES[mine.action](job) } : job
}

export function JobActions({ job }) {
  const cancel = useJobAction('cancel')
  const retry = useJobAction('retry')
  const busy = cancel.isPending || retry.isPending
  const error = cancel.error ?? retry.error
  return (
    <span className="actions">
      {(job.status === 'queued' || job.status === 'running') && (
        <button type="button" disabled={busy} onClick={() => cancel.mutate({ job, action: 'cancel' })}>
          Cancel
        </button>
      )}
      {(job.status === 'failed' || job.status === 'cancelled') && (
        <button type="button" disabled={busy} onClick={() => retry.mutate({ job, action: 'retry' })}>
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
