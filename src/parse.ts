// One set of parsers for every value a user writes: flags, model files' settings and HTTP query
// values alike. Each returns the value or throws an Error in the one message form
// (invalidValue: "Expected positive integer for --top-k but received "-1""); the caller wraps
// it as its context needs (a usage error, a ModelError naming the file, a 400).
import { invalidValue } from './errors.js';

/** Plain decimals only: Number() would also take "0x2", "", " 1 " or "1_0". */
const INTEGER = /^\d+$/;
const DECIMAL = /^(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;
const SIGNED_DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

export type Parser<T> = (raw: string) => T;

function fail(expected: string, what: string, raw: unknown): never {
  throw new Error(invalidValue(expected, what, raw));
}

export const positiveInt =
  (what: string, max = Number.MAX_SAFE_INTEGER): Parser<number> =>
  (raw) => {
    const n = Number(raw);
    if (!INTEGER.test(raw) || !Number.isSafeInteger(n) || n < 1 || n > max) fail(max === Number.MAX_SAFE_INTEGER ? 'positive integer' : `integer from 1 to ${max}`, what, raw);
    return n;
  };

export const nonNegativeInt =
  (what: string, max = Number.MAX_SAFE_INTEGER): Parser<number> =>
  (raw) => {
    const n = Number(raw);
    if (!INTEGER.test(raw) || !Number.isSafeInteger(n) || n > max) fail(max === Number.MAX_SAFE_INTEGER ? 'integer of 0 or more' : `integer from 0 to ${max}`, what, raw);
    return n;
  };

export const nonNegativeNumber =
  (what: string, max = Infinity): Parser<number> =>
  (raw) => {
    const n = Number(raw);
    if (!DECIMAL.test(raw) || !Number.isFinite(n) || n > max) fail(max === Infinity ? 'number of 0 or more' : `number from 0 to ${max}`, what, raw);
    return n;
  };

export const positiveNumber =
  (what: string): Parser<number> =>
  (raw) => {
    const n = Number(raw);
    if (!DECIMAL.test(raw) || !Number.isFinite(n) || n <= 0) fail('positive number', what, raw);
    return n;
  };

/** A share in percent of a whole that must keep some: 0 up to, not including, 100. */
export const percentage =
  (what: string): Parser<number> =>
  (raw) => {
    const n = Number(raw);
    if (!DECIMAL.test(raw) || !(n < 100)) fail('number from 0 to under 100', what, raw);
    return n;
  };

export const unitInterval =
  (what: string): Parser<number> =>
  (raw) => {
    const n = Number(raw);
    if (!DECIMAL.test(raw) || !(n <= 1)) fail('number between 0 and 1', what, raw);
    return n;
  };

export const oneOf =
  <T extends string>(what: string, choices: readonly T[]): Parser<T> =>
  (raw) => {
    if (!choices.includes(raw as T)) fail(`one of ${choices.join(', ')}`, what, raw);
    return raw as T;
  };

/** One or three per-channel values (R, G, B): "127.5", "0.485,0.456,0.406", or from a model
 * file a number or an array of them. `positive`: a standard deviation, never 0 or below. */
export function channelTriple(value: unknown, what: string, positive = false): [number, number, number] {
  const parts = Array.isArray(value) ? value : typeof value === 'number' ? [value] : String(value).split(',');
  const nums = parts.map((v) => (typeof v === 'number' ? v : typeof v === 'string' && SIGNED_DECIMAL.test(v.trim()) ? Number(v.trim()) : NaN));
  const ok = (nums.length === 1 || nums.length === 3) && nums.every((n) => Number.isFinite(n) && (!positive || n > 0));
  if (!ok) fail(`one or three ${positive ? 'positive ' : ''}numbers`, what, value);
  return (nums.length === 1 ? [nums[0], nums[0], nums[0]] : nums) as [number, number, number];
}
