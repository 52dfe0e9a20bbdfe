/**
 * Remote exceptions in every tblib format a cluster may use: 1.7 (bookworm), 3.1 (trixie's
 * .deb) and 3.2 (the wheel: unpickle_exception_with_attrs for exceptions with their own
 * __init__ and no __reduce__), each against a real cluster: the Python type and text, and the
 * cause chain (__cause__, or __context__ as Python shows it).
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { DaskClient, DaskRemoteError } from '@picklewire/transport'
import { DASK_PYTHON, REQUIRED_DASK, TRIXIE_DIR, TRIXIE_TBLIB31, daskMissing, enterLoopbackNamespace, probe, skipOrFail, startCluster, within } from './dask-helpers.js'

const WAIT = 30_000

async function failure(p: Promise<unknown>): Promise<DaskRemoteError> {
  const e = await within(WAIT, p.then(() => null, (err: unknown) => err), 'a failing task')
  if (!(e instanceof DaskRemoteError)) throw new Error(`expected a DaskRemoteError, got ${String(e)}`)
  return e
}

const missing = enterLoopbackNamespace() ?? daskMissing()
const pythons: [string, string][] = [['bookworm', DASK_PYTHON]]
if (existsSync(join(TRIXIE_DIR, 'ok'))) pythons.push(['trixie tblib 3.1', TRIXIE_TBLIB31], ['trixie tblib 3.2', join(TRIXIE_DIR, 'tblib32', 'bin', 'python')])
else if (REQUIRED_DASK.includes('trixie')) t.fail('PICKLEWIRE_REQUIRE_DASK asks for trixie, and scripts/dask-trixie.sh has not made it')
if (missing) skipOrFail(t, missing)
else {
  for (const [name, python] of pythons) {
    t.test(name, async (t) => {
      const cluster = await startCluster(t, { workers: 1, python })
      const client = await DaskClient.connect(cluster.scheduler, { timeout: 10_000, rpcTimeout: WAIT })
      t.teardown(() => client.close())
      const found = probe(python)
      const tblib = typeof found === 'string' ? '?' : found.tblib
      t.comment(`distributed ${client.daskVersion}, tblib ${String(tblib)}`)

      // CalledProcessError has its own __init__ and no __reduce__: tblib 3.2 pickles it with attrs.
      const busted = await failure(client.submit('subprocess.check_call', [['false']]).wait())
      t.equal(busted.exceptionType, 'subprocess.CalledProcessError', 'the type, not tblib\'s helper')
      t.equal(busted.exceptionText, "(1, ['false'])", 'its arguments, as str() of the args shows them')
      t.match(busted.traceback, /File ".*subprocess\.py", line \d+, in check_call/)
      t.notMatch(busted.message, /unpickle_exception/)

      const plain = await failure(client.submit('operator.truediv', [1, 0]).wait())
      t.same([plain.exceptionType, plain.exceptionText], ['ZeroDivisionError', 'division by zero'])
      t.equal(plain.cause, undefined, 'no cause, no chain')

      // Raised while handling another exception: Python shows that one as the context.
      const chained = await failure(client.submit('zoneinfo.ZoneInfo', ['No/Such_Zone']).wait())
      t.equal(chained.exceptionType, 'zoneinfo._common.ZoneInfoNotFoundError')
      if (String(tblib).startsWith('1.')) {
        t.equal(chained.cause, undefined, 'tblib 1.x does not pickle the context')
      } else {
        t.ok(chained.cause instanceof DaskRemoteError, `the context as the cause: ${String(chained.cause)}`)
        t.match((chained.cause as DaskRemoteError).exceptionType, /Error$/)
        t.match(chained.message, /caused by .*Error/)
      }
    })
  }
}
