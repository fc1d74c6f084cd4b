// The React entry against real React (react-dom/server renders): the provider hands its client
// to the hooks, useConnectionState shows the client's status and error as they are when a
// component renders, and a component outside a provider gets a clear error.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createElement as h } from 'react'
import { renderToString } from 'react-dom/server'
import { LiveUpdatesProvider, useConnectionState, useLiveClient } from '../../src/liveupdates/static/react.js'
import { connected, setup } from './helpers.js'

function Banner() {
  const { status, error } = useConnectionState()
  return h('p', null, `${status}${error ? ' ' + error.code + ' ' + error.reason : ''}`)
}

function Topics() {
  return h('p', null, useLiveClient().topics.join(','))
}

const app = (client, ...children) => renderToString(h(LiveUpdatesProvider, { client }, ...children))

test('useConnectionState renders the status of the provider client, as it changes', () => {
  const t = setup({ topics: ['jobs'] })
  assert.equal(app(t.client, h(Banner)), '<p>connecting</p>')
  const ws = connected(t)
  assert.equal(app(t.client, h(Banner)), '<p>connected</p>')
  ws.drop(1006)
  assert.equal(app(t.client, h(Banner)), '<p>reconnecting</p>')
  t.client.close()
  assert.equal(app(t.client, h(Banner)), '<p>closed</p>')
})

test('useConnectionState shows why the client stopped (4401: sign in again)', () => {
  const t = setup()
  connected(t).drop(4401, 'token expired')
  assert.equal(app(t.client, h(Banner)), '<p>closed 4401 unauthorized</p>')
  t.client.close()
})

test('useLiveClient gives the components the very client of the provider', () => {
  const t = setup({ topics: ['jobs', 'admin'] })
  assert.equal(app(t.client, h(Topics)), '<p>jobs,admin</p>')
  t.client.close()
})

test('useConnectionState(client) works without a provider; the hooks refuse a missing one', () => {
  const t = setup()
  function Explicit() {
    return h('p', null, useConnectionState(t.client).status)
  }
  assert.equal(renderToString(h(Explicit)), '<p>connecting</p>')
  assert.throws(() => renderToString(h(Banner)), /need a <LiveUpdatesProvider client=\{\.\.\.\}> above them/)
  assert.throws(() => renderToString(h(Topics)), /need a <LiveUpdatesProvider/)
  assert.throws(() => renderToString(h(LiveUpdatesProvider, { client: null })), /needs a client/)
  t.client.close()
})
