/**
 * The Python peer's own tests (packages/transport/python/test_ws.py, Python to
 * Python), run with python3 -m unittest so that CI runs them with the rest.
 */
import { spawnSync } from 'node:child_process'
import t from 'tap'
import { PYTHON } from '../helpers/python.js'
import { PYTHON_DIR, pythonMissing } from './ws-helpers.js'

const missing = pythonMissing(t)
t.test('python3 -m unittest test_ws', { skip: missing ?? false }, async (t) => {
  const r = spawnSync(PYTHON, ['-m', 'unittest', '-v', 'test_ws'], { cwd: PYTHON_DIR, encoding: 'utf8', timeout: 50_000 })
  const ran = /Ran (\d+) tests?/.exec(r.stderr)
  t.equal(r.status, 0, `unittest passed:\n${r.stderr.split('\n').slice(-40).join('\n')}`)
  t.ok(ran && Number(ran[1]) >= 10, `it ran ${ran?.[1] ?? 'no'} tests`)
  for (const line of r.stderr.split('\n')) if (/ \.\.\. /.test(line)) t.comment(line)
})
