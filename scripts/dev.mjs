#!/usr/bin/env node
// The one entry point behind the root package.json scripts, so that `npm test` and
// `npm run demo` work on a fresh clone with nothing but Node and npm installed: it installs
// the pinned pnpm through npx, installs the workspace, builds it, then runs the task.
import { spawnSync } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const PNPM = 'pnpm@10.34.9'
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bin = (name) => join(root, 'node_modules', '.bin', name)

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts })
  if (r.error) throw r.error
  if (r.status !== 0) process.exit(r.status ?? 1)
}

function mtime(path) {
  return existsSync(path) ? statSync(path).mtimeMs : 0
}

function setup() {
  const marker = join(root, 'node_modules', '.modules.yaml')
  const stale = mtime(marker) === 0 ||
    mtime(join(root, 'pnpm-lock.yaml')) > mtime(marker) ||
    mtime(join(root, 'package.json')) > mtime(marker)
  if (!stale) return
  const frozen = process.env.CI ? ['--frozen-lockfile'] : []
  run('npx', ['--yes', PNPM, 'install', ...frozen])
}

function build() {
  setup()
  run(bin('tsc'), ['-b'])
  // The browser entry as one file (dist/browser/picklewire.js) for pages without a bundler.
  run(process.execPath, [join(root, 'packages/transport/scripts/bundle-browser.mjs'), '--quiet'])
}

const tasks = {
  setup,
  build,
  test(args) {
    build()
    run(bin('tsc'), ['-p', 'test/tsconfig.json'])
    run(bin('tap'), args)
  },
  demo(args) {
    build()
    run(process.execPath, [join(root, 'packages/examples/dist/demo.js'), ...args])
  },
  pack(args) {
    // Tarballs that install with plain npm: pnpm pack writes the codec's version where the
    // workspace says workspace:*.
    build()
    const out = args[0] ?? join(root, 'packs')
    for (const pkg of ['codec', 'transport']) {
      run('npx', ['--yes', PNPM, 'pack', '--pack-destination', out], { cwd: join(root, 'packages', pkg) })
    }
  },
  bench(args) {
    build()
    run(process.execPath, ['--expose-gc', join(root, 'bench/run.mjs'), ...args])
  },
}

const [task, ...rest] = process.argv.slice(2)
if (!tasks[task]) {
  console.error(`usage: node scripts/dev.mjs <${Object.keys(tasks).join('|')}> [args...]`)
  process.exit(2)
}
tasks[task](rest)
