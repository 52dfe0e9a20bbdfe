// The Node peer of test/transport/ws-same-host.test.ts run in another pid namespace (unshare
// --pid --mount-proc): it connects to the echo server at argv[2], sends a float32 array of
// 2 MiB elements and checks the echo, then prints what its same-host path did as one JSON line.
import { connectPickleSocket } from '@picklewire/transport'

const sock = await connectPickleSocket(process.argv[2])
// both challenges are answered (shm-no here) well within this
await new Promise((resolve) => setTimeout(resolve, 300))
const n = 2 ** 21
const a = new Float32Array(n).map((_, i) => i)
await sock.send(a)
const back = (await sock.receive()).data
let matched = back.length === n
for (let i = 0; i < n && matched; i += 997) matched = back[i] === i
const s = sock.stats()
process.stdout.write(`${JSON.stringify({
  pid: process.pid, sameHost: sock.sameHost, matched, buffersSameHostSent: s.buffersSameHostSent, buffersSameHostReceived: s.buffersSameHostReceived,
})}\n`)
await sock.close()
