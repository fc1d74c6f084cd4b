// Size budget, min+gz: the core (client.js and the modules it imports), the TanStack adapter
// and tab sharing (the last two without the core modules they share, which a page loads anyway).
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { test } from 'node:test'
import { build } from 'esbuild'

const STATIC = fileURLToPath(new URL('../../src/liveupdates/static/', import.meta.url))
const CORE = ['backoff.js', 'client.js', 'emitter.js', 'env.js', 'positions.js', 'transports.js']

const BUDGETS = [
  { entry: 'client.js', budget: 5 * 1024, external: [] },
  { entry: 'tanstack.js', budget: 1.5 * 1024, external: CORE },
  { entry: 'tabs.js', budget: 1.5 * 1024, external: CORE },
]

/** Bundled, minified and gzipped size of `entry`, leaving `external` sibling modules out. */
export async function minGzSize(entry, external = []) {
  const result = await build({
    entryPoints: [STATIC + entry],
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2020',
    write: false,
    logLevel: 'silent',
    plugins: [
      {
        name: 'external-siblings',
        setup(b) {
          b.onResolve({ filter: /^\.\// }, (args) => (external.includes(args.path.slice(2)) ? { path: args.path, external: true } : undefined))
        },
      },
    ],
  })
  const code = result.outputFiles[0].contents
  return { min: code.length, gz: gzipSync(code).length }
}

for (const { entry, budget, external } of BUDGETS) {
  test(`${entry} fits in ${budget} bytes min+gz`, async (t) => {
    const { min, gz } = await minGzSize(entry, external)
    t.diagnostic(`${entry}: ${min} B minified, ${gz} B min+gz (budget ${budget})`)
    assert.ok(gz <= budget, `${entry} is ${gz} B min+gz, over its ${budget} B budget`)
  })
}

test('the modules load in a browser as they are: relative imports with .js, no bare specifiers', async () => {
  const { readdir, readFile } = await import('node:fs/promises')
  for (const name of (await readdir(STATIC)).filter((n) => n.endsWith('.js'))) {
    const source = await readFile(STATIC + name, 'utf8')
    for (const [, spec] of source.matchAll(/^import .* from '([^']+)'/gm)) {
      assert.match(spec, /^\.\/[\w-]+\.js$/, `${name} imports ${spec}`)
    }
  }
})
