/**
 * Helpers the @picklewire packages share with each other: not part of the codec's public API,
 * and free to change in any release. Applications import from '@picklewire/codec'.
 */
export { badOptionRange, badOptionType, checkOptions, nearestName, optionNames, type OptionNames } from './options.js'
