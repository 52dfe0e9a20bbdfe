/**
 * Imported first by Dask test files that run Python peers from their top level: the file's
 * process runs itself again inside a loopback-only network namespace before tap or any test
 * starts (see enterLoopbackNamespace). Why no namespace could be made, or null.
 */
import { enterLoopbackNamespace } from './dask-helpers.js'

export const namespaceMissing: string | null = enterLoopbackNamespace()
