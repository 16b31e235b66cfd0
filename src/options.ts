// The flags' value parsers: those of src/parse.ts, whose errors commander reports as a bad
// value (exit 2) in the one form: "Expected positive integer for --batch-size but received "-1"".
import { createRequire } from 'node:module';
import { MAX_CROP_SIDE, parseCrop } from './image/preprocessing.js';
import * as parse from './parse.js';
import { invalidValue } from './errors.js';

/** Required, not imported, as every CommonJS package here is (see src/cli.ts). */
const { InvalidArgumentError } = createRequire(import.meta.url)('commander') as typeof import('commander');

/** A parser as commander takes it: its error is a bad flag value, not an exception. */
const flag =
  <T>(parser: parse.Parser<T>) =>
  (raw: string): T => {
    try {
      return parser(raw);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };

export const positiveInt = (name: string) => flag(parse.positiveInt(name));
export const nonNegativeInt = (name: string, max?: number) => flag(parse.nonNegativeInt(name, max));
export const nonNegativeNumber = (name: string, max?: number) => flag(parse.nonNegativeNumber(name, max));
export const unitInterval = (name: string) => flag(parse.unitInterval(name));
export const oneOf = <T extends string>(name: string, choices: readonly T[]) => flag(parse.oneOf(name, choices));
export const triple = (name: string, positive: boolean) => flag((raw) => parse.channelTriple(raw, name, positive));

/** Upper bounds far beyond any useful setting, below what would exhaust memory or threads. */
export const LIMITS = { batchSize: 1024, threads: 64, decodeJobs: 64, maxDelayMs: 60_000 } as const;

export const positiveNumber = (name: string) => flag(parse.positiveNumber(name));
export const percentage = (name: string) => flag(parse.percentage(name));

export const crop = (name: string) =>
  flag((raw) => {
    try {
      return parseCrop(raw);
    } catch {
      throw new Error(invalidValue(`none, a positive integer up to ${MAX_CROP_SIDE} (the shorter side) or HEIGHTxWIDTH`, name, raw));
    }
  });
