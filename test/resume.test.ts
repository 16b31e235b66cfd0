// -o FILE and --resume: killed runs resumed until done leave every path exactly once, with the
// answer an uninterrupted run gives; changed files, other models and failures are classified again.
import { execFileSync, spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { PassThrough } from 'node:stream';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, symlinkSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, COLOUR, FIX, jsonLines, ROOT, runInProcess, waitFor } from './helpers.js';

const COLOURS = ['red', 'green', 'blue', 'grey'];
const NHWC = join(FIX, 'models', 'colour-nhwc');

let dir: string;
let paths: string[];
/** path -> the predictions an uninterrupted run without -o prints */
let expected: Map<string, unknown>;

/** Small deterministic generator, so a failing kill sequence can be replayed from its seed. */
function rng(seed: number) {
  return () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'classify-resume-'));
  // Copies, not links: a test changes one without changing the others.
  paths = Array.from({ length: 320 }, (_, i) => {
    const p = join(dir, `photo ${String(i).padStart(3, '0')}.jpg`);
    copyFileSync(join(FIX, 'images', `${COLOURS[i % 4]}.jpg`), p);
    return p;
  });
  const r = await runInProcess(['-g', COLOUR], paths.join('\n') + '\n');
  expect(r.code).toBe(0);
  expected = new Map(jsonLines(r.stdout).map((o) => [o.path, o.predictions]));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const input = (ps: string[]) => ps.join('\n') + '\n';
const fileLines = (file: string) => (existsSync(file) ? jsonLines(readFileSync(file, 'utf8')) : []);

/** Starts a --resume run and SIGKILLs it once FILE holds `target` lines (or at once when 0). */
function runAndKill(file: string, target: number, extra: string[] = []): Promise<'killed' | number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, '-g', COLOUR, '-o', file, '--resume', '-q', '-b', '1', '--decode-jobs', '1', ...extra], {
      cwd: ROOT,
    });
    let killed = false;
    const poll = setInterval(() => {
      let count = 0;
      try {
        for (const b of readFileSync(file)) if (b === 10) count++;
      } catch {
        // not created yet
      }
      if (count >= target) {
        killed = child.kill('SIGKILL');
        clearInterval(poll);
      }
    }, 1);
    child.on('exit', (code) => {
      clearInterval(poll);
      resolve(killed && code === null ? 'killed' : (code ?? -1));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input(paths));
  });
}

describe('classify -o FILE --resume', () => {
  it('after SIGKILLs at random points and resumed runs, FILE holds every path exactly once, in input order, with the right answer', async () => {
    // A failure names its seed; CLASSIFY_TEST_SEED=N replays that sequence of kills.
    const seed = Number(process.env.CLASSIFY_TEST_SEED ?? Date.now() % 100000);
    const random = rng(seed);
    const file = join(dir, 'killed.ndjson');
    let kills = 0;
    // The first kill lands during start-up, before any line; later ones at random line counts.
    for (let round = 0; round < 6; round++) {
      const have = round === 0 ? 0 : fileLines(file).length;
      const target = round === 0 ? 0 : have + 1 + Math.floor(random() * 60);
      const result = await runAndKill(file, target);
      if (result === 'killed') kills++;
      else expect(result, `seed ${seed}`).toBe(0);
    }
    expect(kills, `seed ${seed}`).toBeGreaterThanOrEqual(3);
    const last = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-v'], input(paths));
    expect(last.code).toBe(0);
    const out = fileLines(file);
    expect(out.map((o) => o.path), `seed ${seed}`).toEqual(paths);
    for (const o of out) expect(o.predictions).toEqual(expected.get(o.path));
    const report = /(\d+) inputs? skipped \(answered before\), (\d+) classified, 0 failed/.exec(last.stderr);
    expect(Number(report?.[1]) + Number(report?.[2])).toBe(paths.length);
  }, 120_000);

  it('cuts a partial last line left by a kill mid-write, then appends whole lines after it', async () => {
    const file = join(dir, 'partial.ndjson');
    const first = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-q'], input(paths.slice(0, 10)));
    expect(first.code).toBe(0);
    const whole = readFileSync(file, 'utf8').split('\n');
    // The 11th line, as a write cut short would leave it.
    appendFileSync(file, whole[9].replace(paths[9], paths[10]).slice(0, 40));
    const r = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-v'], input(paths.slice(0, 20)));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/cut a partial last line \(40 bytes\)/);
    expect(r.stderr).toMatch(/10 inputs skipped \(answered before\), 10 classified, 0 failed/);
    expect(fileLines(file).map((o) => o.path)).toEqual(paths.slice(0, 20));
  });

  it('records size, mtime and the model fingerprint in each line; skips without reading the file', async () => {
    const file = join(dir, 'fields.ndjson');
    const own = join(dir, 'own.jpg');
    copyFileSync(join(FIX, 'images', 'red.jpg'), own);
    utimesSync(own, 1_700_000_000, 1_700_000_000);
    expect((await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([own]))).code).toBe(0);
    const [line] = fileLines(file);
    const st = statSync(own);
    expect(line).toMatchObject({ path: own, size: st.size, mtime: st.mtimeMs, model: expect.stringMatching(/^[0-9a-f]{16}$/) });
    // Same size and mtime, other bytes (not an image at all): trusted as unchanged, so not read.
    writeFileSync(own, Buffer.alloc(st.size, 'x'));
    utimesSync(own, 1_700_000_000, 1_700_000_000);
    const r = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-v'], input([own]));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/1 input skipped/);
    expect(fileLines(file)).toHaveLength(1);
  });

  it('classifies a modified file again; the newest line for a path is the one to believe', async () => {
    const file = join(dir, 'modified.ndjson');
    const some = paths.slice(0, 8).map((p, i) => {
      const own = join(dir, `mod${i}.jpg`);
      copyFileSync(p, own);
      return own;
    });
    expect((await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input(some))).code).toBe(0);
    // mod0 was red: now blue, and mod1 only touched (same bytes, new mtime).
    copyFileSync(join(FIX, 'images', 'blue.jpg'), some[0]);
    const later = new Date(Date.now() + 5000);
    utimesSync(some[1], later, later);
    const r = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-k', '1', '-v'], input(some));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/6 inputs skipped \(answered before\), 2 classified, 0 failed/);
    const out = fileLines(file);
    expect(out.slice(8).map((o) => [o.path, o.predictions[0].label])).toEqual([
      [some[0], 'blue'],
      [some[1], 'green'],
    ]);
    // And a third run has nothing left to do.
    const again = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-v'], input(some));
    expect(again.stderr).toMatch(/8 inputs skipped/);
    expect(fileLines(file)).toHaveLength(10);
  });

  it('a failure the unchanged file cannot mend is not retried (--retry-failed does); others are; only new failures exit 1', async () => {
    const file = join(dir, 'failed.ndjson');
    const broken = join(dir, 'broken.jpg');
    const fixed = join(dir, 'fixed.jpg');
    writeFileSync(broken, 'not an image');
    writeFileSync(fixed, 'not an image either');
    const list = input([paths[0], broken, fixed, join(dir, 'absent.jpg')]);
    const first = await runInProcess(['-g', COLOUR, '-o', file, '--resume'], list);
    expect(first.code).toBe(1);
    expect(fileLines(file).map((o) => [o.error ?? 'ok', o.error_kind])).toEqual([
      ['ok', undefined],
      ['not an image (unrecognised format)', 'not-an-image'],
      ['not an image (unrecognised format)', 'not-an-image'],
      ['no such file', 'not-found'],
    ]);
    copyFileSync(join(FIX, 'images', 'green.jpg'), fixed);
    const second = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-v'], list);
    // The absent file is tried again (it may appear) and fails as before: nothing new, exit 0,
    // and nothing said about it (cron would mail the same line every night).
    expect(second.code).toBe(0);
    expect(second.stderr).toMatch(/1 input skipped \(answered before\), 1 known failure not retried \(--retry-failed retries them\), 1 classified, 1 failed \(1 as before\)/);
    expect(second.stderr).not.toMatch(/broken\.jpg/);
    expect(second.stderr).not.toMatch(/absent\.jpg/);
    const out = fileLines(file);
    expect(out).toHaveLength(5);
    expect(out[4]).toMatchObject({ path: fixed, predictions: [{ label: 'green' }, {}, {}] });
    const retried = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '--retry-failed', '-v'], list);
    expect(retried.code).toBe(0);
    expect(retried.stderr).toMatch(/2 inputs skipped \(answered before\), 0 classified, 2 failed \(2 as before\)/);
    expect(fileLines(file)).toHaveLength(5);
    // A broken file this run has not seen before is news: exit 1.
    writeFileSync(broken, 'still not an image');
    const changed = await runInProcess(['-g', COLOUR, '-o', file, '--resume'], list);
    expect(changed.code).toBe(1);
    expect(fileLines(file)).toHaveLength(6);
    // The next night, nothing new: nothing on stderr (cron mails nothing), exit 0.
    const night = await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[0], broken, fixed]));
    expect(night).toMatchObject({ code: 0, stderr: '' });
  });

  it('a file refused as too large is tried again: a raised --max-file-size or --max-pixels may mend it', async () => {
    const file = join(dir, 'too-large.ndjson');
    const first = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '--max-pixels', '100'], input([paths[0]]));
    expect(first.code).toBe(1);
    expect(fileLines(file)[0].error_kind).toBe('too-large');
    const raised = await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[0]]));
    expect(raised.code).toBe(0);
    expect(fileLines(file)[1].predictions).toEqual(expected.get(paths[0]));
  });

  it('--resume needs a regular FILE: a device, a pipe or /dev/stdout is exit 2 at once, never a hang', async () => {
    for (const special of ['/dev/zero', '/dev/full', '/dev/null']) {
      const r = await runInProcess(['-g', COLOUR, '-o', special, '--resume'], input([paths[0]]));
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${special}: --resume reads back the answers FILE holds, so FILE must be a regular file, not a character device`);
    }
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const r = await runInProcess(['-g', COLOUR, '-o', fifo, '--resume'], input([paths[0]]));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not a pipe');
    // Without --resume, /dev/null takes the lines as before.
    expect((await runInProcess(['-g', COLOUR, '-o', '/dev/null'], input([paths[0]]))).code).toBe(0);
  });

  it('names that differ only in bytes that are not UTF-8 are two inputs, each answered once and recorded recoverably', async () => {
    const names = [Buffer.from('a\xff.jpg', 'latin1'), Buffer.from('a\xfe.jpg', 'latin1')].map((n) => Buffer.concat([Buffer.from(dir + '/'), n]));
    for (const n of names) copyFileSync(join(FIX, 'images', 'red.jpg'), n);
    const file = join(dir, 'bytes.ndjson');
    const list = Buffer.concat(names.flatMap((n) => [n, Buffer.from('\n')]));
    expect((await runInProcess(['-g', COLOUR, '-o', file, '--resume'], list)).code).toBe(0);
    const out = fileLines(file);
    expect(out).toHaveLength(2);
    expect(out[0].path).toBe(out[1].path); // both show as a\uFFFD.jpg
    expect(out.map((o) => Buffer.from(o.path_bytes, 'base64'))).toEqual(names);
    const again = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-v'], list);
    expect(again.stderr).toMatch(/2 inputs skipped \(answered before\), 0 classified/);
    expect(fileLines(file)).toHaveLength(2);
  });

  it('-o with text or tsv never cuts a last line it cannot tell is its own: the line is ended and kept', async () => {
    for (const format of ['text', 'tsv']) {
      const file = join(dir, `notes.${format}`);
      writeFileSync(file, 'l1\nmy important last line');
      const r = await runInProcess(['-g', COLOUR, '-f', format, '-k', '1', '-o', file], input([paths[0]]));
      expect(r.code).toBe(0);
      expect(r.stderr).toContain('its last line had no line end: one was added before the new lines');
      const kept = readFileSync(file, 'utf8').split('\n');
      expect(kept.slice(0, 2)).toEqual(['l1', 'my important last line']);
      expect(kept[2]).toContain(paths[0]);
    }
  });

  it('one run at a time per FILE: a second exits 2 naming the first; a lock left by a killed run is taken over', async () => {
    const file = join(dir, 'locked.ndjson');
    const stdin = new PassThrough();
    const first = runInProcess(['-g', COLOUR, '-o', file, '--resume'], stdin);
    stdin.write(input([paths[0]]));
    await waitFor(() => fileLines(file).length === 1);
    const second = await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[1]]));
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(new RegExp(`locked\\.ndjson is being written by another classify run \\(pid ${process.pid} on `));
    // Through a link to FILE: the same file, the same lock.
    symlinkSync(file, join(dir, 'link-to-locked.ndjson'));
    const linked = await runInProcess(['-g', COLOUR, '-o', join(dir, 'link-to-locked.ndjson'), '--resume'], input([paths[1]]));
    expect(linked.code).toBe(2);
    expect(linked.stderr).toMatch(/is being written by another classify run/);
    stdin.end();
    expect((await first).code).toBe(0);
    expect(existsSync(`${file}.lock`)).toBe(false);
    // A lock whose process is gone (a SIGKILLed run) does not stop the next one.
    writeFileSync(`${file}.lock`, `999999999 ${hostname()}\n`);
    expect((await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[1]]))).code).toBe(0);
    expect(fileLines(file)).toHaveLength(2);
    // Another host's run (a pod since rescheduled under a new name): held while it is touched,
    // stale once a minute goes by untouched.
    writeFileSync(`${file}.lock`, `1234 another-host\n`);
    const fresh = await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[2]]));
    expect([fresh.code, fresh.stderr]).toEqual([2, expect.stringContaining('(pid 1234 on another-host;')]);
    utimesSync(`${file}.lock`, 1_600_000_000, 1_600_000_000);
    expect((await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[2]]))).code).toBe(0);
    // A lock naming no holder (a run killed before it wrote its pid, a full disk) is stale once old.
    writeFileSync(`${file}.lock`, '');
    utimesSync(`${file}.lock`, 1_600_000_000, 1_600_000_000);
    expect((await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[2]]))).code).toBe(0);
    // A lock that is not a file is refused with what to do, never taken for a run.
    mkdirSync(`${file}.lock`);
    const odd = await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input([paths[3]]));
    expect(odd.code).toBe(2);
    expect(odd.stderr).toMatch(/cannot take its lock .*locked\.ndjson\.lock: it is not a file \(remove it\)/);
    rmSync(`${file}.lock`, { recursive: true });
  });

  it('refuses with exit 2 a FILE written for another model or other preprocessing; --reclassify classifies again', async () => {
    const file = join(dir, 'model.ndjson');
    const some = paths.slice(0, 6);
    expect((await runInProcess(['-g', COLOUR, '-o', file, '--resume'], input(some))).code).toBe(0);
    const before = readFileSync(file);
    for (const other of [['-g', NHWC], ['-g', COLOUR, '--mean', '10'], ['-g', COLOUR, '--softmax', 'on']]) {
      const r = await runInProcess([...other, '-o', file, '--resume'], input(some));
      expect(r.code, other.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/model\.ndjson was last written for another model \(model [0-9a-f]{16}; this one is [0-9a-f]{16}\).*--reclassify/);
      expect(readFileSync(file).equals(before)).toBe(true);
    }
    const re = await runInProcess(['-g', NHWC, '-o', file, '--resume', '--reclassify', '-v'], input(some));
    expect(re.code).toBe(0);
    expect(re.stderr).toMatch(/0 inputs skipped \(answered before\), 6 classified/);
    // Now FILE is this model's: resumed without --reclassify, nothing is left to do.
    const after = await runInProcess(['-g', NHWC, '-o', file, '--resume', '-v'], input(some));
    expect(after.code).toBe(0);
    expect(after.stderr).toMatch(/6 inputs skipped/);
    expect(fileLines(file)).toHaveLength(12);
    expect(new Set(fileLines(file).map((o) => o.model)).size).toBe(2);
  });

  it('takes each path once per run; without --resume, -o appends every line as the filter prints it', async () => {
    const file = join(dir, 'twice.ndjson');
    const list = input([paths[0], paths[1], paths[0]]);
    const resumed = await runInProcess(['-g', COLOUR, '-o', file, '--resume', '-v'], list);
    expect(resumed.stderr).toMatch(/1 input skipped \(answered before\), 2 classified/);
    expect(fileLines(file).map((o) => o.path)).toEqual([paths[0], paths[1]]);
    const plain = await runInProcess(['-g', COLOUR, '-o', file, '-q'], list);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe('');
    expect(plain.stderr).toBe('');
    expect(fileLines(file).map((o) => o.path)).toEqual([paths[0], paths[1], paths[0], paths[1], paths[0]]);
  });

  it('-o with text and tsv appends those lines; --quiet keeps the resume report off stderr', async () => {
    const file = join(dir, 'text.txt');
    expect((await runInProcess(['-g', COLOUR, '-o', file, '-f', 'text', '-k', '1'], input([paths[0]]))).code).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(`${paths[0]}: red (0.9975)\n`);
    const q = await runInProcess(['-g', COLOUR, '-o', join(dir, 'quiet.ndjson'), '--resume', '-q'], input([paths[0]]));
    expect(q.code).toBe(0);
    expect(q.stderr).toBe('');
  });

  const devFull = existsSync('/dev/full');
  if (!devFull) console.warn('skipping the disk-full test: this system has no /dev/full');
  it.skipIf(!devFull)('a write error (disk full) ends the run with exit 74 and the reason, even while stdin stays open', async () => {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, '-g', COLOUR, '-o', '/dev/full'], { cwd: ROOT });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
      child.on('exit', (code) => resolve({ code, stderr }));
      child.stdin.write(input(paths.slice(0, 12))); // and never closed, as under tail -f
    });
    expect(r.code).toBe(74);
    expect(r.stderr).toMatch(/classify: cannot write \/dev\/full: no space left on device \(ENOSPC\)/);
  });

  // --resume with --remote is tested in remote-discovery.test.ts (keyed on the backends' model).
  it('usage errors exit 2 before any input is read: --resume without -o or JSON; a FILE not of JSON lines', async () => {
    const cases: [string[], RegExp][] = [
      [['-g', COLOUR, '--resume'], /--resume needs -o FILE/],
      [['-g', COLOUR, '-o', join(dir, 'x.txt'), '--resume', '-f', 'tsv'], /--resume reads FILE back, which takes --format json/],
      [['-g', COLOUR, '--reclassify'], /--reclassify goes with --resume/],
      [['-g', COLOUR, '-o', dir], /cannot open for appending \(EISDIR\)/],
    ];
    for (const [args, message] of cases) {
      const r = await runInProcess(args, input([paths[0]]));
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    const text = join(dir, 'not-json.ndjson');
    writeFileSync(text, `${paths[0]}: red (0.9975)\n`);
    const r = await runInProcess(['-g', COLOUR, '-o', text, '--resume'], input([paths[0]]));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not-json\.ndjson line 1: not a JSON line classify -o writes/);
    expect(readFileSync(text, 'utf8')).toBe(`${paths[0]}: red (0.9975)\n`);
  });
});
