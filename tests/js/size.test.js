// Size budget, min+gz, of every entry of the npm package (src/liveupdates/static/package.json):
// the core (client.js and the modules it imports), the TanStack adapter, tab sharing and the
// React entry (the last three without the core modules they share, which a page loads anyway,
// and without React itself).
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
  { entry: 'react.js', budget: 1 * 1024, external: CORE },
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
    external: ['react'],
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

test('every entry of the npm package has a budget', async () => {
  const { readFile } = await import('node:fs/promises')
  const pkg = JSON.parse(await readFile(STATIC + 'package.json', 'utf8'))
  const entries = Object.values(pkg.exports).flatMap((e) => (typeof e === 'object' ? [e.default] : []))
  assert.deepEqual(entries.map((e) => e.replace('./', '')).sort(), BUDGETS.map((b) => b.entry).sort())
})

for (const { entry, budget, external } of BUDGETS) {
  test(`${entry} fits in ${budget} bytes min+gz`, async (t) => {
    const { min, gz } = await minGzSize(entry, external)
    t.diagnostic(`${entry}: ${min} B minified, ${gz} B min+gz (budget ${budget})`)
    assert.ok(gz <= budget, `${entry} is ${gz} B min+gz, over its ${budget} B budget`)
  })
}

// react.js alone imports a bare specifier, 'react' (its peer): it is for bundlers or an import map.
const BARE = { 'react.js': ['react'] }

test('the modules load in a browser as they are: relative imports with .js, no bare specifiers', async () => {
  const { readdir, readFile } = await import('node:fs/promises')
  for (const name of (await readdir(STATIC)).filter((n) => n.endsWith('.js'))) {
    const source = await readFile(STATIC + name, 'utf8')
    for (const [, spec] of source.matchAll(/^import .* from '([^']+)'/gm)) {
      if (BARE[name]?.includes(spec)) continue
      assert.match(spec, /^\.\/[\w-]+\.js$/, `${name} imports ${spec}`)
    }
  }
})
