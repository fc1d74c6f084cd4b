// N browser clients (the shipped client.js, node's WebSocket) for tests/test_drain.py.
// Prints "connected" once all are live (close codes seen are recorded); after the server's goodbye, records when each one
// first tries to connect again and when it is live again (ms after its goodbye), and prints them as JSON once all are back
// (or at timeout).
import { createClient } from '../../../src/liveupdates/static/client.js'

const [url, count, timeoutMs] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])]
const clients = []
const back = []
const tried = []
let live = 0

const codes = {}
const recording = (trail, onNew) =>
  class RecordingWebSocket extends globalThis.WebSocket {
    constructor(...args) {
      super(...args)
      onNew()
      trail.push([Math.round(performance.now()), 'ws-new'])
      this.addEventListener('open', () => trail.push([Math.round(performance.now()), 'ws-open']))
      this.addEventListener('close', (e) => {
        trail.push([Math.round(performance.now()), 'ws-close', e.code])
        codes[e.code] = (codes[e.code] ?? 0) + 1
      })
    }
  }
const trails = []
for (let i = 0; i < count; i++) {
  let goodbyeAt = null
  let triedAgain = false
  const trail = []
  trails.push(trail)
  const onNew = () => {
    if (goodbyeAt !== null && !triedAgain) {
      triedAgain = true
      tried.push(performance.now() - goodbyeAt)
    }
  }
  const client = createClient({ url, WebSocket: recording(trail, onNew), base: 200 })
  client.onStatus((status, error) => trail.push([Math.round(performance.now()), status, error?.code]))
  client.on('message', (m) => {
    if (m.type === 'goodbye') goodbyeAt = performance.now()
  })
  client.onStatus((status) => {
    if (status !== 'connected') return
    if (goodbyeAt === null) {
      if (++live === count) console.log('connected')
    } else {
      back.push(performance.now() - goodbyeAt)
      goodbyeAt = null
      if (back.length === count) done()
    }
  })
  clients.push(client)
}

const timer = setTimeout(done, timeoutMs)
function done() {
  clearTimeout(timer)
  const stuck = trails.filter((t) => t.at(-1)?.[1] !== 'connected').slice(0, 3)
  console.log(JSON.stringify({ tried_after_ms: tried, reconnected_after_ms: back, close_codes: codes, stuck }))
  clients.forEach((c) => c.close())
}
