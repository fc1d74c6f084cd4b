// Bundles the dashboard's front end (React + TanStack Query) into static/build/app.js.
//   node examples/jobs_dashboard/build.mjs            build once (scripts/demo.sh, scripts/test.sh)
//   node examples/jobs_dashboard/build.mjs --watch    rebuild on every change
// The liveupdates client stays outside the bundle: the page imports it from the Python
// package, which serves it at /static/liveupdates/, so it always matches the server.
import * as esbuild from 'esbuild'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const options = {
  entryPoints: [path.join(here, 'frontend', 'main.jsx')],
  outfile: path.join(here, 'static', 'build', 'app.js'),
  bundle: true,
  format: 'esm',
  target: 'es2022',
  jsx: 'automatic',
  minify: true,
  sourcemap: true,
  external: ['/static/liveupdates/*'],
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
}

if (process.argv.includes('--watch')) {
  const context = await esbuild.context({ ...options, logLevel: 'info' })
  await context.watch()
} else {
  await esbuild.build(options)
  console.log(`built ${path.relative(process.cwd(), options.outfile)}`)
}
