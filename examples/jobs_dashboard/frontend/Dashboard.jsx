// The dashboard: stats cards, a form to start jobs, and the job list.
import { useQuery } from '@tanstack/react-query'
import { useCallback, useEffect, useState } from 'react'
import { api } from './api.js'
import { FILTERS, JobList } from './JobList.jsx'
import { useApiMutation } from './jobs.jsx'
import { useMe, usePolling } from './live.jsx'
import { Workers } from './Workers.jsx'

export function Dashboard() {
  const me = useMe()
  const [filter, setFilter] = useSharedFilter()
  return (
    <>
      <StatsCards onPick={setFilter} />
      {me.admin && <Workers />}
      <NewJobForm />
      <JobList filter={filter} setFilter={setFilter} />
    </>
  )
}

const FILTER_KEY = 'jobs-dashboard.filter'

/** The job list's filter, the same in every tab of this site: a change is broadcast to the
 * other tabs (BroadcastChannel) and kept for the next tab (localStorage). */
function useSharedFilter() {
  const [filter, setLocal] = useState(() => {
    const saved = localStorage.getItem(FILTER_KEY)
    return saved in FILTERS ? saved : 'active'
  })
  const [channel] = useState(() => new BroadcastChannel(FILTER_KEY))
  useEffect(() => {
    channel.onmessage = (event) => event.data in FILTERS && setLocal(event.data)
    return () => channel.close()
  }, [channel])
  const setFilter = useCallback(
    (next) => {
      setLocal(next)
      localStorage.setItem(FILTER_KEY, next)
      channel.postMessage(next)
    },
    [channel],
  )
  return [filter, setFilter]
}

const CARDS = [
  ['total', 'Jobs', 'all'],
  ['queued', 'Queued', 'active'],
  ['running', 'Running', 'active'],
  ['completed', 'Completed', 'completed'],
  ['failed', 'Failed', 'failed'],
  ['cancelled', 'Cancelled', 'all'],
  ['items', 'Items processed', null],
]

function StatsCards({ onPick }) {
  const me = useMe()
  const refetchInterval = usePolling()
  const { data: stats } = useQuery({ queryKey: ['stats'], queryFn: api.stats, refetchInterval })
  return (
    <section className="cards" aria-label="Stats">
      {CARDS.map(([key, label, filter]) => (
        <button type="button" key={key} className={`card ${key}`} data-stat={key} disabled={!filter} onClick={() => onPick(filter)}>
          <span className="value">{stats ? stats[key] : '…'}</span>
          <span className="label">{label}</span>
        </button>
      ))}
      {me.admin && <ConnectionsCard />}
    </section>
  )
}

/** Admins: live connections, over every process. liveupdates publishes no event when a
 * connection comes or goes, so this one number is polled. */
function ConnectionsCard() {
  const { data } = useQuery({ queryKey: ['connections'], queryFn: api.connections, refetchInterval: 3000 })
  return (
    <div className="card connections" data-stat="connections">
      <span className="value">{data ? data.connections : '…'}</span>
      <span className="label">Live connections</span>
    </div>
  )
}

function NewJobForm() {
  const create = useApiMutation(api.create)
  const submit = (e) => {
    e.preventDefault()
    const form = new FormData(e.currentTarget)
    create.mutate({
      name: form.get('name') || 'job',
      items: Number(form.get('items')),
      count: Number(form.get('count')),
      fail: form.get('fail') === 'on',
    })
  }
  return (
    <form className="new-job" onSubmit={submit} aria-label="New job">
      <label>
        Name <input name="name" defaultValue="Nightly report" maxLength={100} />
      </label>
      <label>
        Items <input name="items" type="number" min={1} max={10000} defaultValue={20} />
      </label>
      <label>
        How many
        <select name="count" defaultValue="1">
          <option value="1">1 job</option>
          <option value="10">10 jobs</option>
          <option value="100">100 jobs</option>
        </select>
      </label>
      <label className="check">
        <input name="fail" type="checkbox" /> Fail half-way
      </label>
      <button type="submit" disabled={create.isPending}>
        Start
      </button>
      {create.error && <span className="error">{create.error.message}</span>}
    </form>
  )
}
