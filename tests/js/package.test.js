// The npm package (src/liveupdates/static/package.json, the very files the Python package
// serves): `npm pack` makes the tarball, which is installed offline (empty npm cache, --offline)
// into a fresh Vite project and a fresh esbuild project; the tooling (vite, esbuild, typescript,
// react, @tanstack/query-core, @types/react) is linked from this repository's node_modules.
// Each project type-checks against the package's `types` (tsc, moduleResolution bundler and
// nodenext), bundles every entry, and the esbuild bundle runs.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, test } from 'node:test'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const STATIC = join(ROOT, 'src/liveupdates/static')
const pkg = JSON.parse(readFileSync(join(STATIC, 'package.json'), 'utf8'))
const TOOLS = ['vite', 'esbuild', 'typescript', 'react', 'react-dom', '@tanstack/query-core', '@types/react']
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

const run = (cmd, args, cwd) => {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: 'pipe', timeout: 120_000, env: { ...process.env, NO_COLOR: '1' } })
  } catch (err) {
    assert.fail(`${cmd} ${args.join(' ')} failed in ${cwd}:\n${err.stdout}\n${err.stderr}`)
  }
}

// Uses every entry, and fails to type-check if the declarations were not found (any).
const APP = `
import { createClient, type Client, type Status } from '${pkg.name}'
import { connectQueryClient, covers } from '${pkg.name}/tanstack'
import { createSharedClient } from '${pkg.name}/tabs'
import { LiveUpdatesProvider, useConnectionState, useLiveClient } from '${pkg.name}/react'
import { QueryClient } from '@tanstack/query-core'
import { createElement } from 'react'

export function start(url: string): { client: Client; stop: () => void } {
  const client = createClient({ url, topics: ['jobs'] })
  const stop = connectQueryClient(client, new QueryClient(), { window: 20 })
  return { client, stop }
}

export const shared = (url: string) => createSharedClient({ url, name: 'app' })

export function Banner(): ReturnType<typeof createElement> {
  const { status, error } = useConnectionState()
  const text: Record<Status, string> = { connecting: '…', connected: '', reconnecting: '…', offline: 'offline', closed: 'closed' }
  void useLiveClient().topics
  return createElement('p', null, error?.code === 4401 ? 'sign in' : text[status])
}

export const App = (client: Client) => createElement(LiveUpdatesProvider, { client }, createElement(Banner))

export const matches: boolean = covers(['jobs'], ['jobs', 7])

// @ts-expect-error url must be a string
createClient({ url: 42 })
// @ts-expect-error not a status
export const wrong: Status = 'open'
`

function tsconfig(moduleResolution, module) {
  return JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, target: 'ES2022', lib: ['ES2022', 'DOM'], module, moduleResolution, skipLibCheck: false, types: [] },
    include: ['src'],
  })
}

let work, tarball

/** A fresh project with the tarball installed offline and the tooling linked. */
function project(name, files) {
  const dir = join(work, name)
  mkdirSync(join(dir, 'src'), { recursive: true })
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }))
  run(npm, ['install', '--offline', '--cache', join(work, 'empty-cache'), '--no-audit', '--no-fund', '--loglevel=error', tarball], dir)
  for (const tool of TOOLS) {
    mkdirSync(join(dir, 'node_modules', tool, '..'), { recursive: true })
    symlinkSync(join(ROOT, 'node_modules', tool), join(dir, 'node_modules', tool), 'dir')
  }
  for (const [path, text] of Object.entries(files)) writeFileSync(join(dir, path), text)
  return dir
}

before(() => {
  work = mkdtempSync(join(tmpdir(), 'liveupdates-npm-'))
  const [packed] = JSON.parse(run(npm, ['pack', '--json', '--pack-destination', work, '--loglevel=error'], STATIC))
  tarball = join(work, packed.filename)
})

after(() => rmSync(work, { recursive: true, force: true }))

test('the tarball holds the served modules, their declarations and package.json, nothing else', () => {
  const listed = JSON.parse(run(npm, ['pack', '--dry-run', '--json', '--loglevel=error'], STATIC))[0].files.map((f) => f.path)
  const served = readdirSync(STATIC).filter((n) => n.endsWith('.js') || n.endsWith('.d.ts'))
  assert.deepEqual(listed.sort(), [...served, 'package.json'].sort())
})

test('the package declares its entries, types, sideEffects and optional peers', () => {
  for (const [entry, target] of Object.entries(pkg.exports)) {
    if (typeof target === 'string') continue
    assert.ok(readdirSync(STATIC).includes(target.types.slice(2)), `${entry}: ${target.types}`)
    assert.ok(readdirSync(STATIC).includes(target.default.slice(2)), `${entry}: ${target.default}`)
  }
  assert.deepEqual(Object.keys(pkg.exports), ['.', './tanstack', './tabs', './react', './package.json'])
  assert.equal(pkg.sideEffects, false)
  assert.equal(pkg.types, './client.d.ts')
  assert.equal(pkg.dependencies, undefined)
  for (const peer of Object.keys(pkg.peerDependencies)) assert.equal(pkg.peerDependenciesMeta[peer].optional, true, peer)
})

test('a fresh esbuild project: installs offline, type-checks (nodenext), bundles and runs', () => {
  const main = `${APP}\nexport { createClient, createSharedClient }\n`
  const runner = `import { renderToString } from 'react-dom/server'
import { App, createClient, createSharedClient, matches } from './main.ts'
const fake = { status: 'connected', error: null, topics: ['jobs'], onStatus: () => () => {} }
console.log(JSON.stringify({ matches, html: renderToString(App(fake)), createClient: typeof createClient, shared: typeof createSharedClient }))
process.exit(0) // react-dom/server's scheduler keeps a MessageChannel open
`
  const dir = project('esbuild-app', { 'src/main.ts': main, 'src/run.js': runner, 'tsconfig.json': tsconfig('nodenext', 'nodenext') })
  run(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], dir)
  const esbuild = join(dir, 'node_modules/esbuild/bin/esbuild')
  run(esbuild, ['src/run.js', '--bundle', '--format=cjs', '--platform=node', '--outfile=dist/main.cjs', '--log-level=error'], dir)
  const out = JSON.parse(run(process.execPath, [join(dir, 'dist/main.cjs')], dir))
  assert.deepEqual(out, { matches: true, html: '<p></p>', createClient: 'function', shared: 'function' })
})

test('a fresh Vite project: installs offline, type-checks (bundler), vite build bundles every entry', () => {
  const index = '<!doctype html><html><body><div id="app"></div><script type="module" src="/src/main.ts"></script></body></html>'
  const main = `${APP}\n;(window as any).app = { start, shared, App, matches }\n`
  const dir = project('vite-app', { 'index.html': index, 'src/main.ts': main, 'tsconfig.json': tsconfig('bundler', 'esnext') })
  run(process.execPath, [join(dir, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], dir)
  run(process.execPath, [join(dir, 'node_modules/vite/bin/vite.js'), 'build', '--logLevel', 'error'], dir)
  const assets = readdirSync(join(dir, 'dist/assets')).filter((n) => n.endsWith('.js'))
  const code = assets.map((n) => readFileSync(join(dir, 'dist/assets', n), 'utf8')).join('\n')
  for (const marker of ['liveupdates.v1', 'LiveUpdatesProvider needs a client', 'liveupdates ']) {
    assert.ok(code.includes(marker), `the Vite bundle lacks ${JSON.stringify(marker)}`)
  }
})
