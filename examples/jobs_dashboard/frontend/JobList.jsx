// The job list, a page at a time (`page_size` jobs; "Show more" loads the next page): the
// filter runs on the server, so "Failed" finds every failed job, not those of the first page.
// Rows are memoized: TanStack keeps unchanged jobs identical across refetches (structural
// sharing), so a refetch re-renders only the rows that changed, and a progress event
// re-renders only its own row. Off-screen rows are not laid out (content-visibility).
import { useInfiniteQuery } from '@tanstack/react-query'
import { memo, useEffect, useMemo, useState } from 'react'
import { api } from './api.js'
import { JobActions, ProgressBar, StatusBadge, useShownJob } from './jobs.jsx'
import { useMe, usePolling, useProgress } from './live.jsx'
import { Link } from './router.jsx'

const FINISHED = new Set(['completed', 'failed', 'cancelled'])

export const FILTERS = {
  active: { label: 'Active', keep: (job, now, ttl) => !FINISHED.has(job.status) || job.finished_at * 1000 + ttl > now },
  failed: { label: 'Failed', keep: (job) => job.status === 'failed' },
  completed: { label: 'Completed', keep: (job) => job.status === 'completed' },
  all: { label: 'All', keep: () => true },
}

/** The pages of the list under `filter`; every invalidation of ["jobs"] refetches them. */
export function useJobPages(filter) {
  const me = useMe()
  const refetchInterval = usePolling()
  return useInfiniteQuery({
    queryKey: ['jobs', 'list', filter],
    queryFn: ({ pageParam }) => api.jobs({ filter, before: pageParam, limit: me.page_size }),
    initialPageParam: null,
    getNextPageParam: (last) => (last.jobs.length < me.page_size ? undefined : last.jobs.at(-1).id),
    refetchInterval,
  })
}

export function JobList({ filter, setFilter }) {
  const me = useMe()
  const { data, error, fetchNextPage, hasNextPage, isFetchingNextPage } = useJobPages(filter)
  const jobs = useMemo(() => data?.pages.flatMap((page) => page.jobs), [data])
  const total = data?.pages[0].total
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
        <span className="shown">{jobs && `${shown.length} of ${total}`}</span>
      </nav>
      {error && <p className="error">{error.message}</p>}
      {jobs && !shown.length && <p className="empty">No jobs here. Start one above.</p>}
      <ul className="job-list">
        {shown.map((job) => (
          <JobRow key={job.id} job={job} owner={me.admin} />
        ))}
      </ul>
      {hasNextPage && (
        <p className="more">
          <button type="button" onClick={() => fetchNextPage()} disabled={isFetchingNextPage}>
            {isFetchingNextPage ? 'Loading…' : `Show ${Math.min(me.page_size, total - jobs.length)} more`}
          </button>
        </p>
      )}
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

const JobRow = memo(function JobRow({ job: cached, owner }) {
  const job = useShownJob(cached)
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
