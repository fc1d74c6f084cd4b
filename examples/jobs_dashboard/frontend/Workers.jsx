// Admins: the health of the worker processes. Each writes a heartbeat every few seconds; a
// worker that stops cleanly says so (and its jobs go to another at once), one that was killed
// just stops beating, and its jobs wait for their lease to run out. A worker starting or
// stopping publishes ["workers"]; between those, the card refreshes at the heartbeat's pace.
import { useQuery } from '@tanstack/react-query'
import { api } from './api.js'
import { useMe } from './live.jsx'

export function Workers() {
  const me = useMe()
  const { data } = useQuery({ queryKey: ['workers'], queryFn: api.workers, refetchInterval: me.heartbeat_ms })
  return (
    <section className="workers" aria-label="Workers">
      <h2>Workers</h2>
      {data && !data.workers.length && <p className="empty">No worker has run yet: start one.</p>}
      {data && data.workers.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Worker</th>
              <th>Health</th>
              <th>Last heartbeat</th>
              <th>Jobs held</th>
            </tr>
          </thead>
          <tbody>
            {data.workers.map((worker) => (
              <WorkerRow key={worker.id} worker={worker} now={data.now} heartbeatMs={me.heartbeat_ms} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}

function WorkerRow({ worker, now, heartbeatMs }) {
  const age = Math.max(0, now - worker.seen_at)
  const health = worker.stopped_at ? 'stopped' : age * 1000 > 3 * heartbeatMs ? 'silent' : 'alive'
  const label = { alive: 'alive', silent: 'not responding', stopped: 'stopped' }[health]
  return (
    <tr className={`worker ${health}`} data-worker={worker.id} data-health={health}>
      <td className="id">
        {worker.host} · pid {worker.pid}
      </td>
      <td>
        <span className={`badge ${health}`}>{label}</span>
      </td>
      <td className="seen">{age < 1 ? 'just now' : `${Math.round(age)} s ago`}</td>
      <td className="held">
        {worker.jobs} of {worker.concurrency}
        {worker.expired > 0 && <span className="expired"> ({worker.expired} lease expired)</span>}
      </td>
    </tr>
  )
}
