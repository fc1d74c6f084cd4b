// The job list. Rows are memoized: TanStack keeps unchanged jobs identical across refetches
// (structural sharing), so a refetch re-renders only the rows that changed, and a progress
// event re-renders only its own row. Off-screen rows are not laid out (content-visibility).
import { useQuery } from '@tanstack/react-query'
import { memo, useEffect, useMemo, useState } from 'react'
import { api } from './api.js'
import { JobActions, ProgressBar, StatusBadge } from './jobs.jsx'
import { useMe, usePolling, useProgress } from './live.jsx'
import { Link } from './router.jsx'

const FINISHED = new Set(['completed', 'failed', 'cancelled'])

const FILTERS = {
  active: { label: 'Active', keep: (job, now, ttl) => !FINISHED.has(job.status) || job.finished_at * 1000 + ttl > now },
  failed: { label: 'Failed', keep: (job) => job.status === 'failed' },
  completed: { label: 'Completed', keep: (job) => job.status === 'completed' },
  all: { label: 'All', keep: () => true },
}

export function JobList({ filter, setFilter }) {
  const me = useMe()
  const refetchInterval = usePolling()
  const { data: jobs, error } = useQuery({ queryKey: ['jobs'], queryFn: api.jobs, refetchInterval })
  const now = useExpiryClock(jobs, me.finished_ttl_ms)
  const shown = useMemo(
    () => (jobs ?? []).filter((job) => FILTERS[filter].keep(job, now, me.finished_ttl_ms)),
    [jobs, filter, now, me.finished_ttl_ms],
  )
  return (
    <section className="jobs" aria-label="Jobs">
      <nav className="filters">
        {Object.entries(FILTERS).map(([key, { label }]) => (
          <button type="button" key={key} aria-pressed={filter === key} onClick={() => setFilter(key)}>
            {label}
          </button>
        ))}
        <span className="shown">{jobs && `${shown.length} of ${jobs.length}`}</span>
      </nav>
      {error && <p className="error">{error.message}</p>}
      {jobs && !shown.length && <p className="empty">No jobs here. Start one above.</p>}
      <ul className="job-list">
        {shown.map((job) => (
          <JobRow key={job.id} job={job} owner={me.admin} />
        ))}
      </ul>
    </section>
  )
}

/** The time, updated when the next finished job is due to leave the active list. */
function useExpiryClock(jobs, ttl) {
  const [now, setNow] = useState(Date.now)
  let next = Infinity
  for (const job of jobs ?? []) {
    const due = FINISHED.has(job.status) ? job.finished_at * 1000 + ttl : Infinity
    if (due > now && due < next) next = due
  }
  useEffect(() => {
    if (next === Infinity) return
    const timer = setTimeout(() => setNow(Date.now()), next - Date.now() + 20)
    return () => clearTimeout(timer)
  }, [next])
  return now
}

const JobRow = memo(function JobRow({ job, owner }) {
  const progress = useProgress(job)
  return (
    <li className={`job ${job.status}`} data-job-id={job.id} data-status={job.status}>
      <Link to={`/jobs/${job.id}`} className="name">
        {job.name}
      </Link>
      {owner && <span className="owner">{job.owner}</span>}
      <StatusBadge status={job.status} />
      <ProgressBar done={progress.done} total={progress.total} />
      <span className={job.error ? 'message error' : 'message'}>{job.error ?? progress.message}</span>
      <JobActions job={job} />
    </li>
  )
})
