// The hand-written declarations type-check, with the usage file tests/js/types-check.ts.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'

test('tsc --noEmit over the .d.ts files and types-check.ts', () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  const project = fileURLToPath(new URL('./tsconfig.json', import.meta.url))
  try {
    execFileSync(process.execPath, [tsc, '--noEmit', '-p', project], { encoding: 'utf8' })
  } catch (err) {
    assert.fail(err.stdout || String(err))
  }
})
