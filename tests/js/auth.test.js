import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setup, settle } from './helpers.js'

/** A getToken whose calls the test resolves one by one. */
function tokens() {
  const calls = []
  const getToken = () => new Promise((resolve, reject) => calls.push({ resolve, reject }))
  return { calls, getToken }
}

test('getToken is awaited before each connect and its token goes in hello', async () => {
  const { calls, getToken } = tokens()
  const t = setup({ getToken })
  await settle()
  assert.equal(calls.length, 1)
  assert.equal(t.WebSocket.sockets.length, 0, 'no socket before the token')
  calls[0].resolve('t1')
  await settle()
  t.ws().open()
  assert.equal(t.ws().sent[0].token, 't1')
  t.ws().welcome()
  t.ws().drop()
  t.clock.advance(1000)
  await settle()
  assert.equal(calls.length, 2, 'a fresh token for every connect')
  calls[1].resolve('t2')
  await settle()
  t.ws().open()
  assert.equal(t.ws().sent[0].token, 't2')
  t.client.close()
})

test('expiring: a new token is sent as refresh; concurrent requests share one getToken call and one refresh', async () => {
  const { calls, getToken } = tokens()
  const t = setup({ getToken })
  await settle()
  calls[0].resolve('t1')
  await settle()
  const ws = t.ws()
  ws.open()
  ws.welcome()
  ws.receive({ type: 'expiring', expires_in: 30000 }, { type: 'expiring', expires_in: 29000 })
  ws.receive({ type: 'expiring', expires_in: 28000 })
  await settle()
  assert.equal(calls.length, 2, 'one call for three expiring messages')
  calls[1].resolve('t2')
  await settle()
  assert.deepEqual(
    ws.sent.filter((m) => m.type === 'refresh'),
    [{ type: 'refresh', token: 't2' }],
    'one refresh frame',
  )
  ws.receive({ type: 'refreshed', expires_in: 3600000 })
  assert.equal(t.client.status, 'connected')
  t.client.close()
})

test('a getToken failure is a failed attempt: retried with backoff', async () => {
  const { calls, getToken } = tokens()
  const t = setup({ getToken })
  await settle()
  calls[0].reject(new Error('no session'))
  await settle()
  assert.equal(t.WebSocket.sockets.length, 0)
  assert.equal(t.clock.pending(), 1)
  assert.equal(t.client.status, 'connecting')
  t.clock.advance(1000)
  await settle()
  assert.equal(calls.length, 2)
  t.client.close()
})

test('close() while getToken is pending opens nothing', async () => {
  const { calls, getToken } = tokens()
  const t = setup({ getToken })
  await settle()
  t.client.close()
  calls[0].resolve('late')
  await settle()
  assert.equal(t.WebSocket.sockets.length, 0)
  assert.equal(t.clock.pending(), 0)
})

test('a token that arrives after its connection died is not sent on the next one', async () => {
  const { calls, getToken } = tokens()
  const t = setup({ getToken })
  await settle()
  calls[0].resolve('t1')
  await settle()
  const ws = t.ws()
  ws.open()
  ws.welcome()
  ws.receive({ type: 'expiring', expires_in: 1000 })
  await settle()
  ws.drop(1006)
  calls[1].resolve('t2')
  await settle()
  assert.equal(ws.sent.filter((m) => m.type === 'refresh').length, 0)
  t.client.close()
})
