/**
 * Shared by the test/browser files: Debian's chromium driven by playwright-core (no browser
 * download: the system's /usr/bin/chromium), a loopback static server for the pages and the
 * browser bundle, and the Python server of browser_peer.py. Without chromium the tests skip with
 * the reason; under PICKLEWIRE_REQUIRE_BROWSER=1 (.ci/run sets it) they fail instead.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, extname, join, normalize } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { chromium, type Browser, type Page } from 'playwright-core'
import { PYTHON } from '../helpers/python.js'

export const HERE = dirname(fileURLToPath(import.meta.url))
export const ROOT = join(HERE, '..', '..')
export const BROWSER_DIST = join(ROOT, 'packages', 'transport', 'dist', 'browser')
export const CHROMIUM = process.env.PICKLEWIRE_CHROMIUM ?? '/usr/bin/chromium'
export const REQUIRE_BROWSER = process.env.PICKLEWIRE_REQUIRE_BROWSER === '1'

/** Why no browser test can run here, or null. */
export function browserMissing(): string | null {
  if (!existsSync(CHROMIUM)) return `no chromium at ${CHROMIUM}: apt-get install chromium (or set PICKLEWIRE_CHROMIUM to a Chromium executable)`
  return null
}

/**
 * For a test's skip option: why the browser tests cannot run, or false. Under
 * PICKLEWIRE_REQUIRE_BROWSER=1 a missing browser fails t instead.
 */
export function skipWithoutBrowser(t: Test): string | false {
  const why = browserMissing()
  if (why === null) return false
  if (REQUIRE_BROWSER) t.fail(`PICKLEWIRE_REQUIRE_BROWSER=1, but ${why}`)
  return why
}

let bundled: string | null = null

/**
 * The one-file bundle of what is built now (dist/browser/bundle.js and all it imports), made
 * once per test process into a folder of its own, so that test files running side by side never
 * read one that another is writing.
 */
export function ensureBundle(): string {
  if (bundled !== null) return bundled
  const entry = join(BROWSER_DIST, 'bundle.js')
  if (!existsSync(entry)) throw new Error(`${entry} is missing: build first (node_modules/.bin/tsc -b)`)
  const dir = mkdtempSync(join(tmpdir(), 'picklewire-bundle-'))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'picklewire.js')
  execFileSync(process.execPath, [join(ROOT, 'packages', 'transport', 'scripts', 'bundle-browser.mjs'), '--quiet', '--outfile', out], { stdio: 'inherit' })
  return (bundled = out)
}

const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.map': 'application/json', '.json': 'application/json' }

/**
 * A static server on 127.0.0.1 for the given URL prefixes and folders; `/picklewire.js` is the
 * browser bundle. Closed at the end of the test.
 */
export async function staticServer(t: Test, roots: Record<string, string> = {}): Promise<string> {
  const bundle = ensureBundle()
  const all: Record<string, string> = { '/': HERE, ...roots }
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    let file: string | null = null
    if (path === '/picklewire.js' || path === '/picklewire.js.map') file = bundle + (path.endsWith('.map') ? '.map' : '')
    else {
      const prefix = Object.keys(all).filter((p) => path.startsWith(p)).sort((a, b) => b.length - a.length)[0]
      if (prefix !== undefined) {
        const candidate = normalize(join(all[prefix]!, path.slice(prefix.length)))
        if (candidate.startsWith(all[prefix]!)) file = candidate
      }
    }
    if (file === null || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found')
      return
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(readFileSync(file))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/**
 * Headless chromium with a page opened at `url` (closed at the end of the test). --no-sandbox
 * only when running as root, where Chromium's sandbox refuses to start.
 */
export async function openPage(t: Test, url: string): Promise<{ browser: Browser; page: Page; console: string[] }> {
  const args = process.getuid?.() === 0 ? ['--no-sandbox'] : []
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args })
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  const console: string[] = []
  page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`))
  page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`))
  await page.goto(url)
  return { browser, page, console }
}

/** The version string of the chromium the tests drive. */
export async function browserVersion(browser: Browser): Promise<string> {
  return browser.version()
}

/** A python3 process printing {"port": N} first; its ws:// URL. Killed (it is ours) at the end of the test. */
export async function pythonServer(t: Test, script: string, args: string[] = []): Promise<{ url: string; proc: ChildProcess; stderr: string[] }> {
  const proc = spawn(PYTHON, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  const stderr: string[] = []
  createInterface({ input: proc.stderr! }).on('line', (l) => stderr.push(l))
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout! })
    const timer = setTimeout(() => reject(new Error(`${script} printed no port within 30 s; stderr:\n${stderr.join('\n')}`)), 30_000)
    rl.once('line', (l) => {
      clearTimeout(timer)
      resolve(l)
    })
    proc.once('exit', (code) => reject(new Error(`${script} exited (${code}) before printing its port; stderr:\n${stderr.join('\n')}`)))
  })
  const { port } = JSON.parse(line) as { port: number }
  return { url: `ws://127.0.0.1:${port}/`, proc, stderr }
}

/** Runs `run(args)` of a module served at `modulePath` inside the page and returns its result. */
export async function inPage<T>(page: Page, modulePath: string, fn: string, args: unknown): Promise<T> {
  // A string, not a function: the page gets exactly this source, nothing the TypeScript loader adds.
  return page.evaluate(`import(${JSON.stringify(modulePath)}).then((m) => m[${JSON.stringify(fn)}](${JSON.stringify(args)}))`) as Promise<T>
}
