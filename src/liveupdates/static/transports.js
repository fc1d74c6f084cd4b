// The two transports behind one small shape: `{send(message), close()}` plus the handlers
// `open()`, `frame(text)` and `close(code)`. Closing detaches every handler first, so a
// closed transport never calls back.

export function openWebSocket(WS, url, h) {
  const ws = new WS(url, 'liveupdates.v1')
  // Browsers follow `error` with `close`; some runtimes (node 20) report a refused connection
  // with `error` alone. Whichever comes first ends the connection, once.
  const end = (code) => {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null
    h.close(code)
  }
  ws.onopen = () => h.open()
  ws.onmessage = (e) => h.frame(e.data)
  ws.onclose = (e) => end(e.code)
  ws.onerror = () => end(1006)
  return {
    send: (m) => ws.send(JSON.stringify(m)),
    close() {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null
      ws.close(1000)
    },
  }
}

// EventSource reconnects by itself, but with the URL's old `since`: we close it on the
// first error instead and reconnect with fresh cursors, like a WebSocket.
export function openEventSource(ES, url, withCredentials, h) {
  const es = new ES(url, { withCredentials })
  es.onmessage = (e) => h.frame(e.data)
  es.onerror = () => h.close()
  return {
    close() {
      es.onmessage = es.onerror = null
      es.close()
    },
  }
}
