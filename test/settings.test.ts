// Settings are decided once: every default stated in DEFAULTS and quoted by the README as it is,
// the flags grouped by consumer into one frozen object, impossible combinations refused there.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_BATCH } from '../src/classifier/classifier.js';
import { UsageError } from '../src/errors.js';
import { classifierSettings, DEFAULTS, type FilterFlags, filterSettings, serveSettings } from '../src/settings.js';
import { ROOT } from './helpers.js';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const camel = (flag: string) => flag.replace(/-(\w)/g, (_, c: string) => c.toUpperCase());

/** The README's flag tables: --flag -> the first backticked value of its default column. */
function readmeDefaults(): Map<string, string> {
  const rows = new Map<string, string>();
  for (const m of README.matchAll(/^\| `(?:-\w, )?--([\w-]+)[^`]*`[^|]*\| `([^`]+)`/gm)) if (!rows.has(m[1])) rows.set(m[1], m[2]);
  return rows;
}

/** Flags as commander gives them with nothing on the command line but --graph. */
const NO_FLAGS: FilterFlags = {
  graph: 'model',
  format: 'json',
  null: false,
  withVersion: false,
  resume: false,
  reclassify: false,
  retryFailed: false,
  remoteInFlight: DEFAULTS.remoteInFlight,
  remoteTimeout: DEFAULTS.remoteTimeoutMs,
  remoteRefresh: DEFAULTS.remoteRefreshMs,
  batchSize: DEFAULTS.batchSize,
  maxDelay: DEFAULTS.maxDelayMs,
  maxPixels: DEFAULTS.maxPixels,
  maxFileSize: DEFAULTS.maxFileSize,
  softmax: DEFAULTS.softmax,
  backend: DEFAULTS.backend,
  device: DEFAULTS.device,
  threads: DEFAULTS.threads,
  decodeJobs: DEFAULTS.decodeJobs,
  topK: DEFAULTS.topK,
  threshold: DEFAULTS.threshold,
  cacheEntries: DEFAULTS.cacheEntries,
  quiet: false,
  verbose: false,
};

describe('defaults', () => {
  it('the README quotes every default DEFAULTS holds, as it is', () => {
    const quoted = readmeDefaults();
    const checked: string[] = [];
    for (const [flag, value] of quoted) {
      const key = [camel(flag), `${camel(flag)}Ms`].find((k) => k in DEFAULTS) as keyof typeof DEFAULTS | undefined;
      if (!key) continue;
      expect(`--${flag} ${value}`).toBe(`--${flag} ${DEFAULTS[key]}`);
      checked.push(key);
    }
    // Every default but the remote list's is in a table.
    expect(Object.keys(DEFAULTS).filter((k) => !checked.includes(k))).toEqual([]);
  });

  it('the batch sizes "0" chooses are the ones the README and --help say', () => {
    const said = `${DEFAULT_BATCH.cpu} on CPU, ${DEFAULT_BATCH.accelerator} on a GPU`;
    expect(README).toContain(`| \`-b, --batch-size N\` | \`0\` = ${said} |`);
  });
});

describe('flags to settings', () => {
  it('groups the flags by consumer, frozen all the way down, with the loading groups a model with no flags has', () => {
    const s = filterSettings({ ...NO_FLAGS, mean: [1, 2, 3], crop: '', cache: '/tmp/c', output: 'out.ndjson' });
    expect(Object.keys(s).sort()).toEqual(['answer', 'cache', 'chatter', 'engine', 'limits', 'model', 'nul', 'output', 'pipeline', 'preprocessing'].sort());
    expect(s.preprocessing).toEqual({ mean: [1, 2, 3], crop: null }); // --crop none: null, as the model's own default
    expect(s.cache).toEqual({ dir: '/tmp/c', entries: DEFAULTS.cacheEntries });
    expect(s.output.file).toBe('out.ndjson');
    expect(Object.isFrozen(s) && Object.isFrozen(s.preprocessing) && Object.isFrozen(s.preprocessing.mean)).toBe(true);
    const plain = filterSettings(NO_FLAGS);
    const { model, engine, preprocessing, pipeline, limits } = classifierSettings('model');
    expect({ model: plain.model, engine: plain.engine, preprocessing: plain.preprocessing, pipeline: plain.pipeline, limits: plain.limits }).toEqual({ model, engine, preprocessing, pipeline, limits });
  });

  it('--remote gives a remote group and no model; the cache and -o groups only when asked', () => {
    const s = filterSettings({ ...NO_FLAGS, graph: undefined, remote: ['http://a:1'] });
    expect(s.model).toBeUndefined();
    expect(s.remote).toEqual({ urls: ['http://a:1'], maxInFlight: 8, timeoutMs: 30_000, refreshMs: 30_000 });
    expect(s.cache).toBeUndefined();
    expect(s.output.file).toBeUndefined();
  });

  it('refuses, as a usage error, the combinations that cannot work', () => {
    const refused: [Partial<FilterFlags>, RegExp][] = [
      [{ remote: ['http://a:1'] }, /--remote and --graph exclude each other/],
      [{ graph: undefined }, /required option -g, --graph <model> not specified/],
      [{ resume: true }, /--resume needs -o FILE/],
      [{ resume: true, output: 'f', format: 'text' }, /--resume reads FILE back, which takes --format json/],
      [{ reclassify: true }, /--reclassify goes with --resume/],
      [{ retryFailed: true }, /--retry-failed goes with --resume/],
      [{ graph: undefined, remote: ['http://a:1'], cache: 'd' }, /--cache needs the model here/],
    ];
    for (const [flags, message] of refused) {
      expect(() => filterSettings({ ...NO_FLAGS, ...flags })).toThrow(UsageError);
      expect(() => filterSettings({ ...NO_FLAGS, ...flags })).toThrow(message);
    }
    const serve = { ...NO_FLAGS, graph: 'm', host: DEFAULTS.host, port: 0, maxBody: 100, maxBuffered: 99, bodyTimeout: 1, drainTimeout: 1, maxQueue: 1, maxFiles: 1, watchInterval: 1 };
    expect(() => serveSettings(serve)).toThrow('Expected at least --max-body (100) for --max-buffered but received 99');
  });

  it('classifierSettings merges overrides group by group, leaving the rest of each group as it was', () => {
    const s = classifierSettings('m', { engine: { threads: 1 }, pipeline: { decodeJobs: 2 } });
    expect(s.engine).toEqual({ backend: 'auto', device: 'auto', threads: 1, softmax: 'auto' });
    expect(s.pipeline).toEqual({ batchSize: 0, maxDelayMs: 10, decodeJobs: 2 });
    expect(Object.isFrozen(s.engine)).toBe(true);
  });
});
