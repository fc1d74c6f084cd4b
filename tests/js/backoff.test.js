import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fullJitter } from '../../src/liveupdates/static/backoff.js'
import { connected, seeded, setup } from './helpers.js'

test('full jitter: uniform over [0, min(cap, base * 2^attempt))', () => {
  const random = seeded(7)
  for (const [attempt, ceiling] of [[0, 1000], [1, 2000], [3, 8000], [5, 30000], [40, 30000]]) {
    const samples = Array.from({ length: 20000 }, () => fullJitter(attempt, 1000, 30000, random))
    const mean = samples.reduce((a, b) => a + b) / samples.length
    assert.ok(Math.min(...samples) >= 0)
    assert.ok(Math.max(...samples) < ceiling)
    assert.ok(Math.min(...samples) < ceiling * 0.01, 'reaches near zero')
    assert.ok(Math.max(...samples) > ceiling * 0.99, 'reaches near the ceiling')
    assert.ok(Math.abs(mean - ceiling / 2) < ceiling * 0.02, `mean ${mean} ~ ${ceiling / 2}`)
  }
})

test('the client retries with full jitter from the first retry and never gives up', () => {
  const t = setup({ random: () => 0.999, base: 100, cap: 1000 })
  const delays = []
  for (let i = 0; i < 12; i++) {
    t.ws().drop(1006)
    delays.push(Math.round(t.clock.delays()[0]))
    t.clock.advance(2000)
  }
  assert.deepEqual(delays, [100, 200, 400, 799, 999, 999, 999, 999, 999, 999, 999, 999])
  assert.equal(t.WebSocket.sockets.length, 13)
  assert.equal(t.client.status, 'connecting')
  t.client.close()
})

test('the first retry is already spread: random() * base', () => {
  const t = setup({ random: () => 0.25, base: 1000 })
  connected(t)
  t.ws().drop(1011)
  assert.deepEqual(t.clock.delays(), [250])
  t.client.close()
})

test('a welcome resets the backoff', () => {
  const t = setup({ random: () => 0.5, base: 100, cap: 10000 })
  for (let i = 0; i < 4; i++) {
    t.ws().drop()
    t.clock.advance(10000)
  }
  connected(t).drop(1011)
  assert.deepEqual(t.clock.delays(), [50])
  t.client.close()
})
