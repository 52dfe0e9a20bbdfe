/**
 * Errors from the Dask side. A failing task reaches the client as its pickled exception and
 * traceback (distributed/core.py error_message: tblib pickles the traceback as
 * tblib.pickling_support.unpickle_traceback(Frame, lineno, next)); an op that fails on the
 * scheduler answers {"status": "uncaught-error", "exception_text", "traceback_text", ...}.
 * The pickles are read in opaque mode (nothing is called) to recover the exception's type,
 * its arguments and the traceback in Python's own "File ..., line ..., in ..." layout.
 *
 * tblib pickles an exception as one of
 *   unpickle_exception(func, args, cause, tb, context, suppress_context, notes)   (all versions;
 *     before 3.0 only the first four)
 *   unpickle_exception_with_attrs(func, attrs, cause, tb, context, suppress_context, notes, args)
 *     (3.2 on, for exceptions with their own __init__ and no __reduce__; attrs["args"] holds the
 *     arguments)
 * and the cause and context are exceptions pickled the same way: they become the error's cause
 * chain, as Python's traceback prints it ("The above exception was the direct cause ...").
 */
import { PyGlobal, PyObject, Tuple, loads } from '@picklewire/codec'
import { TransportError } from '../errors.js'
import { field } from './serialize.js'

/** A Python exception raised on the Dask side: a task that failed, or an op the scheduler could not do. */
export class DaskRemoteError extends TransportError {
  constructor(
    message: string,
    /** The Python exception's class name ('ValueError', 'numpy.core._exceptions._UFuncNoLoopError', ...). */
    readonly exceptionType: string,
    /** str() of the exception, as Python's traceback shows it after the colon. */
    readonly exceptionText: string,
    /** The traceback, "  File ..., line N, in name" per frame, outermost first; '' when none came. */
    readonly traceback: string,
    /** The task's key, for a failed task. */
    readonly key: string | null = null,
    /**
     * The Python exception's __cause__ (raise ... from ...), or its __context__ when Python
     * shows that (no cause, context not suppressed), as a DaskRemoteError of its own; undefined
     * when there is none.
     */
    cause?: DaskRemoteError,
  ) {
    super('REMOTE', message, cause === undefined ? undefined : { cause })
    this.name = 'DaskRemoteError'
  }
}

/** How deep a cause chain is followed (Python's own chains are short; a pickle could nest without end). */
const MAX_CHAIN = 20

function pyRepr(v: unknown): string {
  if (typeof v === 'string') return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'`
  if (v === null || v === undefined) return 'None'
  if (typeof v === 'boolean') return v ? 'True' : 'False'
  if (typeof v === 'number' || typeof v === 'bigint') return String(v)
  if (v instanceof Tuple) return `(${v.map(pyRepr).join(', ')}${v.length === 1 ? ',' : ''})`
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`
  if (v instanceof PyGlobal) return String(v)
  if (v instanceof PyObject) return `<${String(v.callable)} object>`
  return String(v)
}

/** str(exception) as Python computes it from the exception's args. */
function strOfArgs(args: readonly unknown[]): string {
  if (args.length === 0) return ''
  if (args.length === 1) return typeof args[0] === 'string' ? args[0] : pyRepr(args[0])
  return pyRepr(Tuple.fromItems(args))
}

function globalName(g: PyGlobal): string {
  return g.module === 'builtins' || g.module === 'exceptions' ? g.name : `${g.module}.${g.name}`
}

/** The exception's class name and text, from the unpickled (opaque) exception. */
export function describeException(exc: unknown): { type: string; text: string } {
  if (exc instanceof PyObject) {
    const callable = exc.callable
    if (isTblib(exc, 'unpickle_exception')) {
      const [func, args] = exc.args
      const type = func instanceof PyGlobal ? globalName(func) : 'Exception'
      return { type, text: strOfArgs(Array.isArray(args) ? args : []) }
    }
    if (isTblib(exc, 'unpickle_exception_with_attrs')) {
      const [func, attrs, , , , , , args] = exc.args
      const type = func instanceof PyGlobal ? globalName(func) : 'Exception'
      const fromAttrs = field(attrs, 'args')
      const list = Array.isArray(fromAttrs) ? fromAttrs : Array.isArray(args) ? args : []
      return { type, text: strOfArgs(list) }
    }
    return { type: globalName(callable), text: strOfArgs(exc.args) }
  }
  if (exc instanceof PyGlobal) return { type: globalName(exc), text: '' }
  if (exc === null || exc === undefined) return { type: 'Exception', text: '' }
  if (exc instanceof TransportError) return { type: 'Exception', text: `(the exception could not be read: ${exc.message})` }
  if (typeof exc === 'string') return { type: 'Exception', text: exc }
  return { type: 'Exception', text: pyRepr(exc) }
}

function isTblib(o: PyObject, name: string): boolean {
  return o.callable.module === 'tblib.pickling_support' && o.callable.name === name
}

/** The cause Python's traceback shows for an (opaque) tblib exception, and that exception's traceback. */
function causeOf(exc: unknown): { exc: unknown; tb: unknown } | null {
  if (!(exc instanceof PyObject)) return null
  if (!isTblib(exc, 'unpickle_exception') && !isTblib(exc, 'unpickle_exception_with_attrs')) return null
  const [, , cause, , context, suppress] = exc.args
  const next = cause !== null && cause !== undefined ? cause : suppress === true ? null : context
  if (next === null || next === undefined) return null
  const tb = next instanceof PyObject && next.args.length > 3 ? next.args[3] : null
  return { exc: next, tb }
}

/** A DaskRemoteError for each link of the cause chain after exc, the first link outermost. */
function causeChain(exc: unknown): DaskRemoteError | undefined {
  const links: { type: string; text: string; tb: string }[] = []
  for (let c = causeOf(exc); c !== null && links.length < MAX_CHAIN; c = causeOf(c.exc)) {
    links.push({ ...describeException(c.exc), tb: formatTraceback(c.tb) })
  }
  let chain: DaskRemoteError | undefined
  for (const l of links.reverse()) chain = new DaskRemoteError(`caused by ${l.type}${l.text ? `: ${l.text}` : ''}`, l.type, l.text, l.tb, null, chain)
  return chain
}

function stateOf(o: unknown, key: string): unknown {
  return o instanceof PyObject ? field(o.state, key) : undefined
}

function frameLine(frame: unknown, lineno: unknown): string {
  const code = stateOf(frame, 'f_code')
  const file = stateOf(code, 'co_filename')
  const name = stateOf(code, 'co_name')
  return `  File "${typeof file === 'string' ? file : '?'}", line ${typeof lineno === 'number' ? lineno : '?'}, in ${typeof name === 'string' ? name : '?'}\n`
}

/** The traceback text from the unpickled (opaque) traceback: tblib's objects, or the text Dask falls back to. */
export function formatTraceback(tb: unknown): string {
  if (typeof tb === 'string') return tb
  if (tb instanceof TransportError) return `(the traceback could not be read: ${tb.message})\n`
  let out = ''
  let node: unknown = tb
  // tblib's chain: unpickle_traceback(frame, lineno, next), next a Traceback whose state holds tb_frame, tb_lineno, tb_next.
  for (let guard = 0; node instanceof PyObject && guard < 1000; guard++) {
    if (node.callable.name === 'unpickle_traceback') {
      const [frame, lineno, next] = node.args
      out += frameLine(frame, lineno)
      node = next
    } else {
      out += frameLine(stateOf(node, 'tb_frame'), stateOf(node, 'tb_lineno'))
      node = stateOf(node, 'tb_next')
    }
  }
  return out
}

/** Loads a pickle without running anything: unknown globals stay inert placeholders. */
export function loadOpaque(pickle: unknown): unknown {
  if (!(pickle instanceof Uint8Array)) return pickle
  try {
    return loads(pickle, { opaque: true })
  } catch (err) {
    return new TransportError('PROTOCOL', `unreadable pickle: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
}

/** The error of a failed task, from a task-erred report's exception and traceback. */
export function taskError(key: string, exception: unknown, traceback: unknown): DaskRemoteError {
  const exc = loadOpaque(exception)
  const { type, text } = describeException(exc)
  const tb = formatTraceback(loadOpaque(traceback))
  const cause = causeChain(exc)
  const why = cause ? ` (caused by ${cause.exceptionType}${cause.exceptionText ? `: ${cause.exceptionText}` : ''})` : ''
  return new DaskRemoteError(`task ${key} failed: ${type}${text ? `: ${text}` : ''}${why}`, type, text, tb, key, cause)
}

/** The error of an op the peer answered with {"status": "error" | "uncaught-error", ...}; null when the reply is no error. */
export function replyError(op: string, reply: unknown): DaskRemoteError | null {
  const status = field(reply, 'status')
  if (typeof status !== 'string' || !status.includes('error')) return null
  const raw = loadOpaque(field(reply, 'exception'))
  const exc = describeException(raw)
  const excText = field(reply, 'exception_text')
  const tbText = field(reply, 'traceback_text')
  const tb = typeof tbText === 'string' ? tbText : formatTraceback(loadOpaque(field(reply, 'traceback')))
  const detail = exc.type !== 'Exception' || exc.text ? `${exc.type}${exc.text ? `: ${exc.text}` : ''}` : typeof excText === 'string' ? excText : status
  return new DaskRemoteError(`op ${JSON.stringify(op)} failed on the Dask side: ${detail}`, exc.type, exc.text || (typeof excText === 'string' ? excText : ''), tb, null, causeChain(raw))
}
