// The page of the browser example: receives {'seq', 'frequency', 'field'} messages from
// python/field_server.py and draws each field (a float32 NDArray over the frame it arrived in)
// on the canvas; the slider sends {'frequency': value} back. /picklewire.js is the one-file
// bundle of @picklewire/transport/browser with the codec: no bundler, no import map.
import { NDArray, connectPickleSocket } from '/picklewire.js'

const canvas = document.getElementById('field')
const ctx = canvas.getContext('2d')
const slider = document.getElementById('frequency')
const shown = document.getElementById('value')
const status = document.getElementById('status')
const url = new URLSearchParams(location.search).get('ws') ?? 'ws://127.0.0.1:8765/'

/** What the page has drawn, for whoever watches it (the tests read it). */
const demo = { frames: 0, seq: -1, frequency: null, views: 0, error: null }
window.demo = demo

/** A blue-white-red colour map of 256 entries over [-1, 1]. */
const palette = new Uint8ClampedArray(256 * 4)
for (let i = 0; i < 256; i++) {
  const v = i / 255 * 2 - 1
  palette.set(v < 0 ? [255 * (1 + v), 255 * (1 + v), 255, 255] : [255, 255 * (1 - v), 255 * (1 - v), 255], i * 4)
}

function draw(field) {
  const [h, w] = field.shape
  if (canvas.width !== w || canvas.height !== h) Object.assign(canvas, { width: w, height: h })
  const image = ctx.createImageData(w, h)
  const px = new Uint32Array(image.data.buffer)
  const colours = new Uint32Array(palette.buffer)
  const data = field.data // a Float32Array over the frame: C order, row after row
  for (let i = 0; i < data.length; i++) {
    const v = data[i]
    px[i] = colours[Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)))]
  }
  ctx.putImageData(image, 0, 0)
}

try {
  const sock = await connectPickleSocket(url)
  slider.addEventListener('input', () => {
    shown.value = slider.value
    sock.send({ frequency: Number(slider.value) }).catch((err) => (status.textContent = err.message))
  })
  const started = performance.now()
  for await (const m of sock) {
    const field = m.get('field')
    if (!(field instanceof NDArray)) continue
    draw(field)
    demo.frames++
    demo.seq = m.get('seq')
    demo.frequency = m.get('frequency')
    if (!field.copied) demo.views++
    const fps = demo.frames / ((performance.now() - started) / 1000)
    status.textContent = `frame ${demo.seq}, frequency ${demo.frequency}, ${field.dtype.name} ${field.shape.join('x')}, ${fps.toFixed(1)} frames/s, ${sock.stats().bytesReceived} bytes in`
  }
  status.textContent = 'the server closed the connection'
} catch (err) {
  demo.error = err.message
  status.textContent = `error: ${err.message}`
}
