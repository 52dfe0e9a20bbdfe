import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { closeSync, mkdtempSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { OPCODES } from '@picklewire/codec'
import { endFileWithoutPython, runPython } from '../helpers/python.js'
import { firstDifference, stripAnnotations } from './pickletools-corpus.js'

endFileWithoutPython(t)

const CLI = join(dirname(fileURLToPath(import.meta.url)), '../../packages/codec/dist/cli/pickletools.js')
const dir = mkdtempSync(join(tmpdir(), 'pickletools-cli-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

// The files: pickles python3 wrote, including one pickler's pickles split over three files.
const docs = JSON.parse(runPython(String.raw`
import io, json, os, pickle, pickletools, sys
d = ${JSON.stringify(dir)}
def put(name, data):
    with open(os.path.join(d, name), 'wb') as f: f.write(data)
put('list.pkl', pickle.dumps([1, 'two', (3.0, b'four'), {'five': None}], 0))
put('nested.pkl', pickle.dumps({'a': [[1, [2, [3]]]], 'b': {1, 2}, 'c': 'caf\u00e9 \U0001f600'}, 2))
put('p5.pkl', pickle.dumps([bytearray(b'x'), pickle.PickleBuffer(b'y')], 5, buffer_callback=lambda b: False))
put('two.pkl', pickle.dumps([1], 0) + pickle.dumps('second', 4))
put('bad.pkl', b'(I1\nI2\nt')
put('underflow.pkl', b'\x80\x02]a.')
put('big.pkl', pickle.dumps(list(range(3000)), 4))
f = io.BytesIO(); p = pickle.Pickler(f, 2); x = ['shared']
for i, v in enumerate([x, [x, x], 'end']):
    start = f.tell(); p.dump(v); put('memo%d.pkl' % i, f.getvalue()[start:])
print(json.dumps({o.name: o.doc.split('\n', 1)[0] for o in pickletools.opcodes}))
`).toString('utf8')) as Record<string, string>
mkdirSync(join(dir, 'adir'))
// The interpreter itself, not a version manager's shim in front of it: dozens of runs follow.
const python = runPython('import sys; print(sys.executable)').toString('utf8').trim()
const ourDocs = Object.fromEntries(OPCODES.map((op) => [op.name, op.doc.split('\n', 1)[0]!]))

interface Ran { status: number | null; stdout: string; stderr: string }

/**
 * Runs a command to its end. stdinFile, when given, is opened for this process alone as its
 * standard input (a regular file, where python3 can tell() its position); input is piped.
 */
function run(command: string, args: string[], stdin?: { file?: string; input?: Uint8Array }): Promise<Ran> {
  const fd = stdin?.file === undefined ? undefined : openSync(join(dir, stdin.file), 'r')
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: dir, stdio: [fd ?? 'pipe', 'pipe', 'pipe'], timeout: 30_000 })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout!.on('data', (b: Buffer) => out.push(b))
    child.stderr!.on('data', (b: Buffer) => err.push(b))
    child.on('error', reject)
    child.on('close', (status) => {
      if (fd !== undefined) closeSync(fd)
      resolve({ status, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') })
    })
    if (fd === undefined) child.stdin!.end(stdin?.input)
  })
}

const pickletools = (args: string[], stdin?: { file?: string; input?: Uint8Array }) => run(python, ['-m', 'pickletools', ...args], stdin)
const ours = (args: string[], stdin?: { file?: string; input?: Uint8Array }) => run(process.execPath, [CLI, ...args], stdin)

/** The last line of a Python traceback: "ValueError: message" -> "message". */
function pythonError(stderr: string): string {
  const last = stderr.trim().split('\n').pop() ?? ''
  return last.replace(/^\w+: /, '')
}

let compared = 0

/** Runs python3 -m pickletools and our command with the same arguments and compares everything visible. */
async function compareWithPython(t: Test, args: string[], options: { stdin?: string; outputFile?: string } = {}): Promise<void> {
  const stdin = options.stdin === undefined ? undefined : { file: options.stdin }
  const py = await pickletools(args, stdin)
  const pyOut = options.outputFile === undefined ? py.stdout : readFileSync(join(dir, options.outputFile), 'utf8')
  const mine = await ours(args, stdin)
  const ourOut = options.outputFile === undefined ? mine.stdout : readFileSync(join(dir, options.outputFile), 'utf8')
  const label = `pickletools ${args.join(' ')}${options.stdin === undefined ? '' : ' < ' + options.stdin}`
  compared++
  const annotated = args.some((a) => /^-[a-z]*a|^--an/.test(a))
  const expected = annotated ? stripAnnotations(pyOut, docs) : { text: pyOut }
  const actual = annotated ? stripAnnotations(ourOut, ourDocs) : { text: ourOut }
  t.equal(expected.badLine, undefined, `${label}: python annotates every opcode line`)
  t.equal(actual.badLine, undefined, `${label}: we annotate every opcode line`)
  t.ok(pyOut.length > 0, `${label}: python listed something`)
  t.ok(expected.text === actual.text, expected.text === actual.text ? `${label}: same listing` : `${label}: ${firstDifference(expected.text, actual.text)}`)
  t.equal(mine.status, py.status, `${label}: exit status ${py.status}`)
  if (py.status === 0) {
    t.equal(mine.stderr, '', `${label}: nothing on stderr`)
  } else {
    const lines = mine.stderr.trimEnd().split('\n')
    t.equal(lines.length, 1, `${label}: one line on stderr`)
    t.ok(lines[0]!.endsWith(': ' + pythonError(py.stderr)), `${label}: ${JSON.stringify(lines[0])} ends with python's message ${JSON.stringify(pythonError(py.stderr))}`)
  }
}

const compareAll = (t: Test, cases: string[][]) => Promise.all(cases.map((args) => compareWithPython(t, args)))

t.test('one file, each option, as python3 -m pickletools prints it', async (t) => {
  const files = ['list.pkl', 'nested.pkl', 'p5.pkl', 'big.pkl']
  const optionSets = [[], ['-a'], ['--annotate'], ['-l', '2'], ['-l0'], ['--indentlevel=8', '-a'], ['-al', '1'], ['--indent', '-3'], ['-m'], ['-p', 'ignored with one file']]
  await compareAll(t, optionSets.flatMap((args, i) => [[...args, files[i % 4]!], [...args, files[(i + 1) % 4]!]]))
})

t.test('a file holding several pickles: only the first is listed, as python3 does', async (t) => {
  await compareAll(t, [['two.pkl'], ['-a', 'two.pkl']])
})

t.test('several files: the preamble before each, the memo kept with -m', async (t) => {
  await compareAll(t, [
    ['list.pkl', 'nested.pkl', 'p5.pkl'],
    ['-a', '-l', '3', 'list.pkl', 'two.pkl'],
    ['-p', '--- {name} ---', 'list.pkl', 'nested.pkl'],
    ['--preamble={name!r:>20}|{{literal}}', 'list.pkl', 'nested.pkl'],
    ['-p', '{name:*^30.6}', 'list.pkl', 'nested.pkl'],
    ['-m', 'memo0.pkl', 'memo1.pkl', 'memo2.pkl'],
    ['memo0.pkl', 'memo1.pkl', 'memo2.pkl'],
    ['list.pkl', 'list.pkl'],
    ['-m', 'memo0.pkl', 'memo0.pkl'],
  ])
})

t.test('standard input as -', async (t) => {
  await Promise.all([
    compareWithPython(t, ['-'], { stdin: 'nested.pkl' }),
    compareWithPython(t, ['-a', '-'], { stdin: 'list.pkl' }),
    compareWithPython(t, ['-', '-'], { stdin: 'two.pkl' }),
    compareWithPython(t, ['list.pkl', '-'], { stdin: 'nested.pkl' }),
  ])
})

t.test('-o writes the listing to a file', async (t) => {
  await Promise.all([
    compareWithPython(t, ['-o', 'out1.txt', 'nested.pkl'], { outputFile: 'out1.txt' }),
    compareWithPython(t, ['--output', 'out2.txt', '-a', 'list.pkl', 'p5.pkl'], { outputFile: 'out2.txt' }),
  ])
})

t.test('malformed pickles: the listing up to the problem, then one line and status 1', async (t) => {
  await compareAll(t, [['bad.pkl'], ['-a', 'underflow.pkl'], ['list.pkl', 'underflow.pkl', 'nested.pkl'], ['memo1.pkl']])
})

t.test('bad command lines and unreadable files: one line on stderr, status 2, no stack trace', async (t) => {
  const cases: [string[], RegExp][] = [
    [['-x', 'list.pkl'], /unrecognized arguments: -x/],
    [['--bogus', 'list.pkl'], /unrecognized arguments: --bogus/],
    [['-l', 'x', 'list.pkl'], /argument -l\/--indentlevel: invalid int value: 'x'/],
    [['list.pkl', '-l'], /argument -l\/--indentlevel: expected one argument/],
    [['--memo=yes', 'list.pkl'], /argument -m\/--memo: ignored explicit argument 'yes'/],
    [['missing.pkl'], /can't open 'missing.pkl': No such file or directory/],
    [['adir'], /can't open 'adir': Is a directory/],
    [['list.pkl', 'missing.pkl'], /can't open 'missing.pkl'/],
    [['-o', join(dir, 'no/such/dir/out.txt'), 'list.pkl'], /argument -o\/--output: can't open/],
    [['-p', '{nope}', 'list.pkl', 'nested.pkl'], /preamble: unknown field \{nope\}/],
    [['-p', '{name', 'list.pkl', 'nested.pkl'], /preamble: expected '\}' before end of string/],
  ]
  await Promise.all(cases.map(async ([args, message]) => {
    const [mine, py] = await Promise.all([ours(args), pickletools(args)])
    const label = args.join(' ')
    t.not(py.status, 0, `${label}: python3 refuses it too`)
    t.equal(mine.status, 2, `${label}: status 2`)
    const lines = mine.stderr.trimEnd().split('\n')
    t.equal(lines.length, 1, `${label}: one line`)
    t.match(lines[0], message, label)
    t.notMatch(mine.stderr, /\n\s+at /, `${label}: no stack trace`)
    if (args[0] !== '-p') t.equal(mine.stdout, '', `${label}: nothing listed`)
  }))
})

t.test('-h prints the help; with no file and piped input, standard input is read', async (t) => {
  const help = await ours(['-h'])
  t.equal(help.status, 0)
  t.match(help.stdout, /usage: pickletools/)
  t.match(help.stdout, /--indentlevel/)
  const [piped, py] = await Promise.all([ours([], { input: readFileSync(join(dir, 'list.pkl')) }), pickletools(['-'], { file: 'list.pkl' })])
  t.equal(piped.status, 0)
  t.equal(piped.stdout, py.stdout, 'the same listing as python3 -m pickletools - < file')
})

t.test('summary', async (t) => {
  t.ok(compared >= 40, `${compared} command lines compared with python3 -m pickletools`)
})
