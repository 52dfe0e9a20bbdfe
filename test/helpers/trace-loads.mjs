// Registers module hooks that append every resolved module URL to the file named by
// PICKLEWIRE_TRACE_LOADS: used with `node --import` to see which packages an import loads.
import { register } from 'node:module'

register('./trace-loads-hooks.mjs', import.meta.url, { data: { file: process.env.PICKLEWIRE_TRACE_LOADS } })
