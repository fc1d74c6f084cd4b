// The page of tests/browser/test_react.py, bundled by esbuild with React: the React entry in a
// real browser. The banner records every status it renders (window.renders).
import { createElement as h } from 'react'
import { createRoot } from 'react-dom/client'
import { createClient } from '../../src/liveupdates/static/client.js'
import { LiveUpdatesProvider, useConnectionState, useLiveClient } from '../../src/liveupdates/static/react.js'

const live = createClient({ url: '/live', topics: ['jobs'], getToken: async () => 'alice' })
window.live = live
window.renders = []

function Banner() {
  const { status, error } = useConnectionState()
  const topics = useLiveClient().topics.join(',')
  window.renders.push(status)
  return h('p', { id: 'status' }, `${status}${error ? ' ' + error.code : ''} (${topics})`)
}

createRoot(document.getElementById('root')).render(h(LiveUpdatesProvider, { client: live }, h(Banner)))
