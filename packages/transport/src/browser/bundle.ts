/**
 * The one-file bundle's entry (dist/browser/picklewire.js): the browser carrier and the codec,
 * so that a page without a bundler has NDArray, dumps, loads and the rest from the same file.
 */
export * from './index.js'
export * from '@picklewire/codec'
