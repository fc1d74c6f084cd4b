// Who is signed in decides everything: the sign-in form, or the live dashboard.
import { useIsFetching, useQuery, useQueryClient } from '@tanstack/react-query'
import { api } from './api.js'
import { Banner, StatusPill } from './Banner.jsx'
import { Dashboard } from './Dashboard.jsx'
import { JobPage } from './JobPage.jsx'
import { LiveProvider, useLive, useMe } from './live.jsx'
import { Login } from './Login.jsx'
import { Link, usePath } from './router.jsx'
import { Toasts } from './Toasts.jsx'

export function App() {
  const me = useQuery({ queryKey: ['me'], queryFn: api.me, staleTime: Infinity, retry: false })
  if (me.isPending) return <p className="loading">Loading…</p>
  if (me.error?.status === 401) return <Login />
  if (me.error) return <p className="error">Cannot reach the server: {me.error.message}</p>
  return (
    <LiveProvider me={me.data}>
      <Shell />
    </LiveProvider>
  )
}

/** The header and banner on top, the page scrolling under them, and the toasts in a dock of
 * their own at the bottom: the page's area ends where they begin, so they never cover it. */
function Shell() {
  const path = usePath()
  const job = path.match(/^\/jobs\/(\d+)$/)
  return (
    <>
      <Header />
      <Banner />
      <div className="page">
        <main>{job ? <JobPage id={Number(job[1])} /> : <Dashboard />}</main>
      </div>
      <Toasts />
    </>
  )
}

function Header() {
  const me = useMe()
  return (
    <header className="top">
      <Link to="/" className="brand">
        Jobs <small>liveupdates</small>
      </Link>
      <StatusPill />
      <span className="spacer" />
      <RefreshButton />
      <span className="who">
        {me.user}
        {me.admin && <span className="badge admin">admin</span>}
      </span>
      <button type="button" className="link" onClick={signOut}>
        Sign out
      </button>
    </header>
  )
}

async function signOut() {
  await api.logout()
  location.assign('/login') // a fresh page: no cache, no connection of the old user
}

/** Refetch everything shown now; reconnect at once if live updates are down. */
function RefreshButton() {
  const queryClient = useQueryClient()
  const live = useLive()
  const fetching = useIsFetching() > 0
  const refresh = () => {
    if (live.status !== 'connected') live.reconnect()
    queryClient.invalidateQueries()
  }
  return (
    <button type="button" onClick={refresh} aria-busy={fetching} className="refresh">
      <span className={fetching ? 'spin' : ''}>⟳</span> Refresh
    </button>
  )
}
