// The task file of test/transport/structured-clone.test.ts: a piscina handler that returns its
// task as it arrived, so the test sees what an ArenaPool task is in the worker, and back.
import { arenaHandler } from '@picklewire/transport/shm'

export default arenaHandler((task) => task)
