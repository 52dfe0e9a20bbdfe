// Import time of each package entry point: a fresh Node process per sample imports the entry,
// timed inside the process from before the import to after it (so process start-up is out).
// Baselines in the same run: the codec entry, and the third-party packages the carriers load
// (ws, piscina, msgpackr) imported alone.
import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

const ENTRIES = [
  '@picklewire/codec',
  '@picklewire/transport/shm',
  '@picklewire/transport/ws',
  '@picklewire/transport/dask',
  '@picklewire/transport',
]
// Resolved from the transport package, where pnpm links them.
const BASELINES = ['ws', 'piscina', 'msgpackr']

function importMs(specifier, from) {
  const script = `const t = performance.now(); await import(${JSON.stringify(specifier)}); console.log(performance.now() - t)`
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: from, encoding: 'utf8' })
  return Number(out.trim())
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s[s.length >> 1]
}

export async function runImports({ quick, log }) {
  const samples = quick ? 3 : 15
  const rows = []
  const all = [...ENTRIES.map((e) => [e, root]), ...BASELINES.map((b) => [b, join(root, 'packages', 'transport')])]
  const times = new Map(all.map(([name]) => [name, []]))
  // Interleaved rounds, so that a noisy moment of the machine touches every entry alike.
  for (let i = 0; i < samples; i++) {
    for (const [name, from] of all) times.get(name).push(importMs(name, from))
    log(`  round ${i + 1}/${samples}`)
  }
  const codec = median(times.get('@picklewire/codec'))
  console.log(`| import | median ms | range ms | vs @picklewire/codec |`)
  console.log(`|---|---:|---:|---:|`)
  for (const [name] of all) {
    const xs = times.get(name)
    const m = median(xs)
    rows.push({ name, m })
    console.log(`| \`${name}\`${BASELINES.includes(name) ? ' (alone)' : ''} | ${m.toFixed(1)} | ${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)} | ${(m / codec).toFixed(2)}x |`)
  }
  console.log(`\n${samples} fresh processes per row, interleaved; time from before import() to after it, start-up excluded.`)
  return rows
}
