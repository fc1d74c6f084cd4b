// One job: its state, live progress, and the history of its progress.
import { useQuery } from '@tanstack/react-query'
import { api } from './api.js'
import { formatTime, JobActions, ProgressBar, StatusBadge, useShownJob } from './jobs.jsx'
import { usePolling, useProgress } from './live.jsx'
import { Link } from './router.jsx'

export function JobPage({ id }) {
  const refetchInterval = usePolling()
  const job = useQuery({ queryKey: ['jobs', id], queryFn: () => api.job(id), refetchInterval })
  if (job.error) return <p className="error">Job {id}: {job.error.message}. <Link to="/">Back</Link></p>
  if (!job.data) return <p className="loading">Loading…</p>
  return <JobDetail job={job.data} refetchInterval={refetchInterval} />
}

function JobDetail({ job: cached, refetchInterval }) {
  const job = useShownJob(cached)
  const progress = useProgress(job)
  const history = useQuery({
    queryKey: ['jobs', job.id, 'history'],
    queryFn: () => api.history(job.id),
    refetchInterval,
  })
  return (
    <article className={`job-page ${job.status}`} data-job-id={job.id} data-status={job.status}>
      <p>
        <Link to="/">← All jobs</Link>
      </p>
      <h1>
        {job.name} <StatusBadge status={job.status} />
      </h1>
      <ProgressBar done={progress.done} total={progress.total} />
      <p className={job.error ? 'message error' : 'message'}>{job.error ?? progress.message}</p>
      <dl className="facts">
        <dt>Owner</dt>
        <dd>{job.owner}</dd>
        <dt>Attempt</dt>
        <dd>{job.attempt}</dd>
        <dt>Created</dt>
        <dd>{formatTime(job.created_at)}</dd>
        <dt>Started</dt>
        <dd>{formatTime(job.started_at)}</dd>
        <dt>Finished</dt>
        <dd>{formatTime(job.finished_at)}</dd>
      </dl>
      <JobActions job={job} />
      <h2>Progress history</h2>
      <table className="history">
        <thead>
          <tr>
            <th>Time</th>
            <th>Attempt</th>
            <th>Items</th>
            <th>Message</th>
          </tr>
        </thead>
        <tbody>
          {(history.data ?? []).toReversed().map((point, i) => (
            <tr key={history.data.length - i}>
              <td>{formatTime(point.at)}</td>
              <td>{point.attempt}</td>
              <td>
                {point.done}/{point.total}
              </td>
              <td>{point.message}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </article>
  )
}
