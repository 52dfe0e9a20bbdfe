#!/usr/bin/env node
// Bundles the browser entry (dist/browser/bundle.js: index.js and the codec, built by tsc) with msgpackr into
// one ES module, dist/browser/picklewire.js, that a page loads with <script type="module"> and no
// bundler or import map of its own. Run after `tsc -b` (the package's build script does).
// Prints the bundle's size, minified and gzipped. --outfile PATH writes it elsewhere (the tests
// bundle what is built now into a folder of their own); --quiet prints nothing.
import { build } from 'esbuild'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'browser')
const at = process.argv.indexOf('--outfile')
const outfile = at > 0 ? process.argv[at + 1] : join(dir, 'picklewire.js')

await build({
  entryPoints: [join(dir, 'bundle.js')],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
})
const bytes = readFileSync(outfile)
if (!process.argv.includes('--quiet')) {
  console.log(`${at > 0 ? outfile : 'dist/browser/picklewire.js'}: ${(bytes.length / 1024).toFixed(1)} kB minified, ${(gzipSync(bytes).length / 1024).toFixed(1)} kB gzipped`)
}
