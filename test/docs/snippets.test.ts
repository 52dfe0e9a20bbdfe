/**
 * Every TypeScript, JavaScript and Python code block of README.md, docs/ and the packages'
 * READMEs runs as written: TypeScript blocks are type-checked (strict) and run with Node,
 * Python blocks run with python3 (the Python peer from packages/transport/python on its path).
 * They run inside a loopback-only network namespace, so that a block may listen on the fixed
 * port it shows.
 *
 * An HTML comment on the line before a block tells the test what the block needs:
 *   <!-- snippet: file=worker.ts -->        the block is that file, beside the others of its page
 *                                           (a module another block loads); it is not run itself
 *   <!-- snippet: needs=echo-server:8765 --> a picklewire echo server (requests answered with
 *                                           { got: value }) listens on 127.0.0.1:8765 first
 *   <!-- snippet: needs=dask:8786 -->        a Dask scheduler and worker listen on 127.0.0.1:8786
 *   <!-- snippet: needs=python -->           the block runs python3 with numpy itself
 *   <!-- snippet: check-only=REASON -->      type-checked, not run (REASON says why)
 * Blocks of other languages (sh, the pickletools listings) are not run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { listenPickleSocket } from '@picklewire/transport/ws'
import { DaskCluster, REQUIRED_DASK, daskMissing, enterLoopbackNamespace } from '../transport/dask-helpers.js'
import { PYTHON, REQUIRE_PYTHON, pythonMissing } from '../helpers/python.js'

const netns = enterLoopbackNamespace()
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const work = join(root, 'test', '.fixtures', 'snippets')
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

interface Block {
  page: string
  line: number
  lang: 'ts' | 'js' | 'python'
  code: string
  file: string
  needs: string[]
  checkOnly: string | null
  module: boolean
}

function pages(): string[] {
  const docs = readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))
  return ['README.md', ...docs.sort(), 'packages/codec/README.md', 'packages/transport/README.md', 'packages/transport/python/README.md']
}

const LANGS: Record<string, Block['lang']> = { ts: 'ts', typescript: 'ts', js: 'js', javascript: 'js', python: 'python', py: 'python' }

function blocksOf(page: string): { blocks: Block[]; others: number } {
  const lines = readFileSync(join(root, page), 'utf8').split('\n')
  const blocks: Block[] = []
  let others = 0
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i]!)
    if (!open) continue
    let end = i + 1
    while (end < lines.length && lines[end] !== '```') end++
    const lang = LANGS[open[1]!]
    if (lang === undefined) {
      others++
    } else {
      const directive = /^<!--\s*snippet:\s*(.*?)\s*-->$/.exec(lines[i - 1] ?? '')
      const opts = new Map<string, string>()
      for (const part of directive ? directive[1]!.split(';') : []) {
        const at = part.indexOf('=')
        if (at < 0) throw new Error(`${page}:${i}: snippet directive part without '=': ${part}`)
        opts.set(part.slice(0, at).trim(), part.slice(at + 1).trim())
      }
      for (const k of opts.keys()) if (!['file', 'needs', 'check-only'].includes(k)) throw new Error(`${page}:${i}: unknown snippet directive ${k}`)
      const ext = lang === 'python' ? 'py' : lang
      blocks.push({
        page, line: i + 1, lang, code: lines.slice(i + 1, end).join('\n') + '\n',
        file: opts.get('file') ?? `block-${i + 1}.${ext}`,
        needs: (opts.get('needs') ?? '').split(',').map((s) => s.trim()).filter(Boolean),
        checkOnly: opts.get('check-only') ?? null,
        module: opts.has('file'),
      })
    }
    i = end
  }
  return { blocks, others }
}

function dirOf(page: string): string {
  return join(work, page.replace(/[/.]/g, '_'))
}

/** Starts what a block needs; returns the means to stop it. */
async function provide(need: string): Promise<() => Promise<void>> {
  if (need === 'python') return async () => {}
  const [what, port] = need.split(':')
  if (what === 'echo-server') {
    const server = await listenPickleSocket({ host: '127.0.0.1', port: Number(port), onRequest: (v) => ({ got: v }) })
    server.on('connection', async (sock) => {
      for await (const v of sock) await sock.send(v)
    })
    return () => server.close()
  }
  if (what === 'dask') {
    const cluster = new DaskCluster({ port: Number(port), workers: 1 })
    await cluster.ready()
    return () => cluster.stop()
  }
  throw new Error(`unknown snippet need ${need}`)
}

/** Why a need cannot be met here, or null; a Dask that CI requires (PICKLEWIRE_REQUIRE_DASK) is never missing quietly. */
function missingFor(t: Test, need: string): string | null {
  if (need === 'python') return pythonFor(t, ['numpy'])
  if (!need.startsWith('dask:')) return null
  const missing = daskMissing()
  if (missing && REQUIRED_DASK.length > 0) t.fail(`PICKLEWIRE_REQUIRE_DASK is set, but ${missing}`)
  return missing
}

/** Why python3 with these modules is missing, or null; a python3 that CI requires (PICKLEWIRE_REQUIRE_PYTHON) is never missing quietly. */
function pythonFor(t: Test, modules: string[]): string | null {
  const missing = pythonMissing(modules)
  if (missing && REQUIRE_PYTHON) t.fail(`PICKLEWIRE_REQUIRE_PYTHON=1, but ${missing}`)
  return missing
}

async function runBlock(b: Block, dir: string): Promise<{ status: number | null; output: string }> {
  const file = b.lang === 'ts' ? join(dir, b.file.replace(/\.ts$/, '.js')) : join(dir, b.file)
  const [cmd, args] = b.lang === 'python' ? [PYTHON, ['-W', 'error', file]] : [process.execPath, [file]]
  const child: ChildProcess = spawn(cmd, args, {
    cwd: dir,
    env: { ...process.env, PYTHONPATH: join(root, 'packages', 'transport', 'python') },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const [status] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { status, output }
}

const all = pages().map((page) => ({ page, ...blocksOf(page) }))
const blocks = all.flatMap((p) => p.blocks)

t.test('the pages have code blocks to check', async (t) => {
  t.ok(blocks.filter((b) => b.lang === 'ts').length >= 10, `${blocks.filter((b) => b.lang === 'ts').length} TypeScript blocks`)
  t.ok(blocks.filter((b) => b.lang === 'python').length >= 2, `${blocks.filter((b) => b.lang === 'python').length} Python blocks`)
})

t.test('TypeScript blocks type-check (strict)', async (t) => {
  rmSync(work, { recursive: true, force: true })
  for (const b of blocks) {
    const dir = dirOf(b.page)
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }))
    writeFileSync(join(dir, b.file), b.code)
  }
  writeFileSync(join(work, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', moduleDetection: 'force',
      types: ['node'], skipLibCheck: true, noEmitOnError: false, sourceMap: false,
    },
    include: ['**/*.ts'],
  }))
  const r = spawnSync(process.execPath, [tsc, '-p', work], { cwd: work, encoding: 'utf8' })
  // Errors name the block's page and line, not the generated file.
  const errors = r.stdout.replace(/^([^(\n]+)\((\d+),(\d+)\)/gm, (_, f: string, l: string, c: string) => {
    const b = blocks.find((x) => join(relative(work, dirOf(x.page)), x.file) === f)
    return b ? `${b.page}:${b.line + Number(l)}:${c}` : `${f}(${l},${c})`
  })
  t.equal(r.status, 0, `tsc on ${blocks.filter((b) => b.lang === 'ts').length} blocks${errors ? `:\n${errors}` : ''}`)
})

t.test('blocks run as written', async (t) => {
  if (netns) {
    t.plan(0, `${netns}: the blocks listen on fixed ports, which they do only inside a namespace of their own`)
    return
  }
  const pythonLacks = pythonFor(t, ['numpy', 'websockets', 'msgpack'])
  let ran = 0
  const notRun: string[] = []
  for (const b of blocks) {
    const where = `${b.page}:${b.line}`
    if (b.module) continue
    if (b.lang === 'python' && pythonLacks) {
      notRun.push(`${where}: ${pythonLacks}`)
      continue
    }
    if (b.checkOnly) {
      if (b.lang === 'python') {
        const compiled = spawnSync(PYTHON, ['-m', 'py_compile', join(dirOf(b.page), b.file)], { encoding: 'utf8' })
        t.equal(compiled.status, 0, `${where} (python) compiles${compiled.status === 0 ? '' : `:\n${compiled.stderr}`}`)
      }
      notRun.push(`${where}: ${b.checkOnly}`)
      continue
    }
    const missing = b.needs.map((n) => missingFor(t, n)).find((m) => m !== null)
    if (missing) {
      notRun.push(`${where}: ${missing}`)
      continue
    }
    const stops: (() => Promise<void>)[] = []
    try {
      for (const need of b.needs) stops.push(await provide(need))
      const { status, output } = await runBlock(b, dirOf(b.page))
      t.equal(status, 0, `${where} (${b.lang}) runs${status === 0 ? '' : `:\n${output.slice(-3000)}`}`)
      ran++
    } finally {
      for (const stop of stops.reverse()) await stop()
    }
  }
  t.comment(`ran ${ran} blocks; not run: ${notRun.length}${notRun.length ? `\n  ${notRun.join('\n  ')}` : ''}`)
  t.comment(`blocks in other languages, not run: ${all.reduce((n, p) => n + p.others, 0)} (shell commands, listings)`)
  t.ok(ran > 0, 'some blocks ran')
})

t.teardown(() => rmSync(work, { recursive: true, force: true }))
