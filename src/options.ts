// One way to reject a bad flag value, in the words sharp uses:
// "Expected positive integer for --batch-size but received -1".
import { InvalidArgumentError } from 'commander';
import { parseCrop } from './image/preprocessing.js';
import { channelTriple } from './model.js';

function reject(expected: string, flag: string, raw: string): never {
  throw new InvalidArgumentError(`Expected ${expected} for ${flag} but received ${JSON.stringify(raw)}`);
}

export const positiveInt = (flag: string) => (raw: string) => {
  const n = Number(raw);
  if (!/^\s*\d+\s*$/.test(raw) || !Number.isSafeInteger(n) || n < 1) reject('positive integer', flag, raw);
  return n;
};

export const nonNegativeInt = (flag: string, max = Number.MAX_SAFE_INTEGER) => (raw: string) => {
  const n = Number(raw);
  const ok = /^\s*\d+\s*$/.test(raw) && Number.isSafeInteger(n) && n <= max;
  if (!ok) reject(max === Number.MAX_SAFE_INTEGER ? 'integer of 0 or more' : `integer from 0 to ${max}`, flag, raw);
  return n;
};

export const nonNegativeNumber = (flag: string, max = Infinity) => (raw: string) => {
  const n = Number(raw);
  const ok = raw.trim() !== '' && Number.isFinite(n) && n >= 0 && n <= max;
  if (!ok) reject(max === Infinity ? 'number of 0 or more' : `number from 0 to ${max}`, flag, raw);
  return n;
};

/** Upper bounds far beyond any useful setting, below what would exhaust memory or threads. */
export const LIMITS = { batchSize: 1024, threads: 64, decodeJobs: 64, maxDelayMs: 60_000 } as const;

export const positiveNumber = (flag: string) => (raw: string) => {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n <= 0) reject('positive number', flag, raw);
  return n;
};

export const percentage = (flag: string) => (raw: string) => {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n >= 100) reject('number from 0 to under 100', flag, raw);
  return n;
};

export const unitInterval = (flag: string) => (raw: string) => {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) reject('number between 0 and 1', flag, raw);
  return n;
};

export const oneOf =
  <T extends string>(flag: string, choices: readonly T[]) =>
  (raw: string): T => {
    if (!choices.includes(raw as T)) reject(`one of ${choices.join(', ')}`, flag, raw);
    return raw as T;
  };

export const triple = (flag: string, positive: boolean) => (raw: string) => {
  try {
    return channelTriple(raw, flag, flag, positive);
  } catch {
    reject(`one or three comma-separated ${positive ? 'positive ' : ''}numbers`, flag, raw);
  }
};

export const crop = (flag: string) => (raw: string) => {
  try {
    return parseCrop(raw);
  } catch {
    reject('none, a positive integer (the shorter side) or HEIGHTxWIDTH', flag, raw);
  }
};
