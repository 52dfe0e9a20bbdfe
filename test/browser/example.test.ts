/**
 * The browser example (packages/examples: browser-demo.ts, browser/, python/field_server.py)
 * opened in headless chromium with its Python producer: the page draws frames (screenshots of
 * the canvas differ, its pixels are not one colour) and its slider changes what Python computes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startBrowserDemo } from '../../packages/examples/dist/browser-demo.js'
import { ensureBundle, openPage, skipWithoutBrowser } from './browser-helpers.js'
import { skipWithoutPython } from '../helpers/python.js'

interface DemoState { frames: number; seq: number; frequency: number | null; views: number; error: string | null }

const skip = skipWithoutBrowser(t) || skipWithoutPython(t, ['numpy', 'websockets', 'msgpack'])
if (skip) t.plan(0, skip)
else {
  const demo = await startBrowserDemo(0, 0, ensureBundle())
  t.teardown(() => demo.close())
  const { page } = await openPage(t, demo.url)
  const state = (): Promise<DemoState> => page.evaluate('window.demo') as Promise<DemoState>
  const until = async (what: string, ok: (s: DemoState) => boolean): Promise<DemoState> => {
    const end = Date.now() + 20_000
    for (;;) {
      const s = await state()
      if (ok(s)) return s
      if (s?.error || Date.now() > end) throw new Error(`waited for ${what}: ${JSON.stringify(s)}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  /** The canvas: how many distinct colours it shows, and a checksum of its pixels. */
  const pixels = (): Promise<{ colours: number; sum: number }> => page.evaluate(`(() => {
    const c = document.getElementById('field')
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
    const seen = new Set()
    let sum = 0
    for (let i = 0; i < d.length; i += 4) {
      const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2]
      seen.add(v)
      sum = (sum * 31 + v) >>> 0
    }
    return { colours: seen.size, sum }
  })()`) as Promise<{ colours: number; sum: number }>

  t.test('the page draws the frames Python streams', async (t) => {
    const first = await until('frames', (s) => s?.frames >= 5)
    t.equal(first.error, null)
    t.equal(first.views, first.frames, 'every field arrived as a view over its frame (no copy)')
    const dir = mkdtempSync(join(tmpdir(), 'picklewire-browser-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const canvas = page.locator('#field')
    const shot1 = await canvas.screenshot()
    const p1 = await pixels()
    const seen = first.seq
    await until('more frames', (s) => s.seq >= seen + 5)
    const shot2 = await canvas.screenshot()
    const p2 = await pixels()
    writeFileSync(join(dir, 'frame-1.png'), shot1)
    writeFileSync(join(dir, 'frame-2.png'), shot2)
    t.ok(p1.colours > 50, `the canvas shows ${p1.colours} colours, not one`)
    t.not(p1.sum, p2.sum, 'the canvas changed between two frames')
    t.notSame(shot1, shot2, 'so did its screenshots')
    t.ok(shot1.length > 1000, `a screenshot of ${shot1.length} bytes`)
  })

  t.test('moving the slider changes what Python computes', async (t) => {
    const before = await state()
    t.equal(before.frequency, 8, 'frames start at frequency 8')
    await page.locator('#frequency').fill('23')
    const after = await until('frames at the new frequency', (s) => s.frequency === 23)
    t.ok(after.seq > before.seq, `frame ${after.seq} was computed with frequency 23`)
    const p = await pixels()
    t.ok(p.colours > 50, 'and drawn')
  })
}
