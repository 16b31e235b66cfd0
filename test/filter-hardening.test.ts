// The filter under hostile or mistaken input: nothing hangs, crashes or invents a line.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, COLOUR, FIX, jsonLines, lines, ROOT, runInProcess } from './helpers.js';

const img = (name: string) => join('fixtures', 'images', name);
const REAL = new Set([img('red.jpg'), img('green.jpg'), img('blue.jpg')]);
const dir = mkdtempSync(join(tmpdir(), 'classify-hard-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts the filter with a pipe on stdin and collects what it writes. */
function start(args: string[]) {
  const child = spawn(process.execPath, [BIN, '-g', COLOUR, ...args], { cwd: ROOT });
  const got = { out: '', err: '' };
  child.stdout.setEncoding('utf8').on('data', (d) => (got.out += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (got.err += d));
  child.stdin.on('error', () => undefined);
  const exited = new Promise<{ code: number | null; ms: number }>((resolve) => {
    let signalledAt = 0;
    const kill = child.kill.bind(child);
    child.kill = (sig?: NodeJS.Signals | number) => ((signalledAt = performance.now()), kill(sig));
    child.once('exit', (code) => resolve({ code, ms: performance.now() - signalledAt }));
  });
  const outputLines = (n: number) =>
    new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => lines(got.out).length >= n && (clearInterval(poll), resolve()), 5);
      child.once('exit', () => (clearInterval(poll), lines(got.out).length >= n ? resolve() : reject(new Error(`exited early: ${got.err}`))));
    });
  return { child, got, exited, outputLines };
}

describe('filter: only regular files are read', () => {
  it('a FIFO and a character device are that line\'s error; the run goes on and ends', async () => {
    const fifo = join(dir, 'pipe.jpg');
    spawnSync('mkfifo', [fifo]);
    const r = await runInProcess(['-g', COLOUR, '-k', '1'], [img('red.jpg'), fifo, '/dev/zero', '/dev/urandom', img('green.jpg')].join('\n') + '\n');
    expect(r.code).toBe(1);
    expect(jsonLines(r.stdout)).toEqual([
      { path: img('red.jpg'), predictions: [{ label: 'red', score: expect.any(Number) }] },
      { path: fifo, error: 'not a regular file' },
      { path: '/dev/zero', error: 'not a regular file' },
      { path: '/dev/urandom', error: 'not a regular file' },
      { path: img('green.jpg'), predictions: [{ label: 'green', score: expect.any(Number) }] },
    ]);
  });

  it('a file over --max-file-size is refused from its size, unread', async () => {
    const sparse = join(dir, 'huge.jpg');
    writeFileSync(sparse, '');
    truncateSync(sparse, 1.5 * 1024 ** 3);
    const r = await runInProcess(['-g', COLOUR, '-q'], `${sparse}\n${img('red.jpg')}\n`);
    expect(r.code).toBe(1);
    const [huge, red] = jsonLines(r.stdout);
    expect(huge).toEqual({ path: sparse, error: `file of ${1.5 * 1024 ** 3} bytes is over the limit of 104857600 (--max-file-size)` });
    expect(red.predictions[0].label).toBe('red');
    const small = await runInProcess(['-g', COLOUR, '-q', '--max-file-size', '1000', img('red.jpg')]);
    expect(jsonLines(small.stdout)[0].error).toMatch(/over the limit of 1000 \(--max-file-size\)/);
  });
});

describe('filter: interrupts', () => {
  it('Ctrl-C never turns an unterminated tail into a path', async () => {
    for (const nul of [false, true]) {
      const sep = nul ? '\0' : '\n';
      const run = start(nul ? ['-0'] : []);
      // A real file's prefix: were it taken as a path, it would fail or, worse, name another file.
      run.child.stdin.write(`${img('red.jpg')}${sep}fixtures/images/gre`);
      await run.outputLines(1);
      run.child.kill('SIGINT');
      const { code } = await run.exited;
      expect(code).toBe(130);
      expect(jsonLines(run.got.out).map((o) => o.path)).toEqual([img('red.jpg')]);
    }
  });

  it('at a real end of input, an unterminated last line is a path', async () => {
    const r = await runInProcess(['-g', COLOUR, '-k', '1'], `${img('red.jpg')}\n${img('green.jpg')}`);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(['red', 'green']);
  });

  it('Ctrl-C on a long list stops soon, dropping what was read but not started', async () => {
    const list = Array.from({ length: 30_000 }, (_, i) => [...REAL][i % 3]).join('\n') + '\n';
    const run = start(['-q', '-k', '1']);
    run.child.stdin.write(list);
    await run.outputLines(20);
    run.child.kill('SIGINT');
    const { code, ms } = await run.exited;
    expect(code).toBe(130);
    expect(ms).toBeLessThan(5000); // it used to classify every buffered path first (40 s)
    const out = jsonLines(run.got.out);
    expect(out.length).toBeLessThan(2000);
    expect(out.every((o) => REAL.has(o.path) && o.predictions)).toBe(true);
  });

  it('SIGTERM behaves like Ctrl-C: in-flight results written, then 143', async () => {
    const run = start(['-k', '1']);
    run.child.stdin.write(`${img('red.jpg')}\n${img('green.jpg')}\n`);
    await run.outputLines(2);
    run.child.kill('SIGTERM');
    const { code } = await run.exited;
    expect(code).toBe(143);
    expect(jsonLines(run.got.out).map((o) => o.predictions[0].label)).toEqual(['red', 'green']);
    expect(run.got.err).not.toMatch(/Error|at /);
  });
});

describe('filter: odd input lines', () => {
  it('a line over 1 MiB is that line\'s error; later lines are classified', async () => {
    const long = 'x'.repeat(3 * 1024 * 1024);
    const r = await runInProcess(['-g', COLOUR, '-k', '1'], `${img('red.jpg')}\n${long}\n${img('green.jpg')}\n`);
    expect(r.code).toBe(1);
    const out = jsonLines(r.stdout);
    expect(out).toHaveLength(3);
    expect(out[1].error).toBe('line longer than 1048576 bytes: not a path');
    expect(out[1].path.length).toBeLessThan(300);
    expect([out[0].predictions[0].label, out[2].predictions[0].label]).toEqual(['red', 'green']);
    expect(r.stderr).not.toMatch(/maximum buffer/);
  });

  it('NUL-separated input without -0 is recognised at the start and refused once (exit 2), however large; a later NUL is that line\'s error', async () => {
    const names = Array.from({ length: 60_000 }, (_, i) => img(i % 2 ? 'red.jpg' : 'green.jpg')).join('\0') + '\0';
    expect(names.length).toBeGreaterThan(1 << 20);
    const r = await runInProcess(['-g', COLOUR], names);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('classify: stdin is NUL-separated (as find -print0 and xargs -0 write it): add -0 to read it so\n');
    // However the bytes arrive: the first chunk may hold no NUL yet.
    const split = await runInProcess(['-g', COLOUR], Readable.from([Buffer.from(names.slice(0, 1)), Buffer.from(names.slice(1))]));
    expect([split.code, split.stdout]).toEqual([2, '']);
    const later = await runInProcess(['-g', COLOUR, '-q'], `${img('red.jpg')}\n${img('red.jpg')}\0${img('green.jpg')}\n`);
    expect(later.code).toBe(1);
    expect(jsonLines(later.stdout)[1].error).toBe('path contains a NUL byte: the input looks NUL-separated (find -print0, xargs -0); use -0');
  });

  it('image bytes on stdin instead of paths are recognised and said once (exit 2)', async () => {
    const r = await runInProcess(['-g', COLOUR], readFileSync(join(FIX, 'images', 'red.jpg')));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toEqual([expect.stringMatching(/^classify: stdin holds JPEG image data, not paths/)]);
  });

  it('--device gpu is refused before the model loads, without blaming the model', async () => {
    const r = await runInProcess(['-g', 'no/such/model', '--device', 'gpu'], img('red.jpg'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Expected one of auto, cpu, webgpu, cuda, tensorrt for --device but received "gpu"/);
    expect(r.stderr).not.toMatch(/no\/such\/model/);
  });

  const hasScript = spawnSync('script', ['--version']).status === 0;
  if (!hasScript) console.warn('skipping the terminal-stdin test: util-linux `script` is not installed');
  it.skipIf(!hasScript)('a terminal on stdin gets one line saying paths are read from stdin', () => {
    // timeout keeps the terminal as the filter's stdin (a job sent to the background would get /dev/null).
    const cmd = `timeout -s INT 3 "${process.execPath}" "${BIN}" -g "${COLOUR}"`;
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: ROOT, encoding: 'utf8', timeout: 20_000, env: { ...process.env, NO_COLOR: '1' } });
    expect(r.stdout).toMatch(/classify: reading image paths from stdin, one per line/);
  });
});

describe('filter: output errors', () => {
  it('a full disk is one clear message and exit 74, not a stack trace', async () => {
    const r = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" -g "${COLOUR}" ${img('red.jpg')} > /dev/full`], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status).toBe(74);
    expect(lines(r.stderr)).toEqual(['classify: cannot write output: no space left on device (ENOSPC)']);
  });
});

describe('filter: found by attacking the hardened filter', () => {
  it('flags that would exhaust memory or threads are refused before the model loads', async () => {
    for (const [flag, value, expected] of [
      ['--decode-jobs', '256', 'integer from 0 to 64'],
      ['--threads', '1000', 'integer from 0 to 64'],
      ['--batch-size', '100000000', 'integer from 0 to 1024'],
      ['--max-delay', '99999999999', 'number from 0 to 60000'],
    ]) {
      const r = await runInProcess(['-g', 'no/such/model', flag, value], img('red.jpg'));
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`Expected ${expected} for ${flag} but received "${value}"`);
    }
  });

  it('a Unix socket is "not a regular file"', async () => {
    const sock = join(dir, 'listening.jpg');
    const server = net.createServer().listen(sock);
    await once(server, 'listening');
    try {
      const r = await runInProcess(['-g', COLOUR, '-q', sock]);
      expect(jsonLines(r.stdout)).toEqual([{ path: sock, error: 'not a regular file' }]);
    } finally {
      server.close();
    }
  });

  it('an SVG filter bomb renders at the model size in the exact modes too (88 s and 670 MB before)', async () => {
    const rects = Array.from({ length: 20 }, () => '<rect width="4000" height="4000" fill="red" filter="url(#f)"/>').join('');
    const bomb = join(dir, 'bomb.svg');
    writeFileSync(
      bomb,
      `<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000"><filter id="f" x="-1000%" y="-1000%" width="3000%" height="3000%"><feGaussianBlur stdDeviation="2000"/></filter>${rects}</svg>`,
    );
    const r = await runInProcess(['-g', join(FIX, 'models', 'colour-frozen'), '-k', '1', bomb]); // tf1 by default
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout)[0].predictions[0].label).toBe('red');
  }, 20_000);

  it('-o to /dev/null or a pipe writes and exits 0 (syncing them used to be an internal error)', async () => {
    const r = await runInProcess(['-g', COLOUR, '-o', '/dev/null', img('red.jpg')]);
    expect([r.code, r.stderr]).toEqual([0, '']);
  });

  it('-o FILE --resume never cuts a last line classify did not write', async () => {
    const notes = join(dir, 'notes.txt');
    writeFileSync(notes, 'keep\nnote');
    const r = await runInProcess(['-g', COLOUR, '-o', notes, '--resume', img('red.jpg')]);
    expect(r.code).toBe(2);
    expect(readFileSync(notes, 'utf8')).toBe('keep\nnote');
  });
});

describe('filter: file names are bytes', () => {
  it('a name that is not valid UTF-8 is opened by its bytes, with -0 and in lines; text names unchanged', async () => {
    const raw = Buffer.concat([Buffer.from(join(dir, 'bad')), Buffer.from([0xff, 0xfe]), Buffer.from('.jpg')]);
    copyFileSync(join(FIX, 'images', 'red.jpg'), raw);
    const unicode = join(dir, 'ünï €.jpg');
    copyFileSync(join(FIX, 'images', 'green.jpg'), unicode);
    for (const sep of ['\0', '\n']) {
      const input = Buffer.concat([raw, Buffer.from(sep), Buffer.from(unicode + sep)]);
      const r = await runInProcess(['-g', COLOUR, '-k', '1', ...(sep === '\0' ? ['-0'] : [])], input);
      expect(r.code).toBe(0);
      const [bad, good] = jsonLines(r.stdout);
      expect(bad.path).toBe(raw.toString('utf8')); // shown with U+FFFD: JSON text cannot hold the bytes
      expect(bad.predictions[0].label).toBe('red');
      expect(good).toEqual({ path: unicode, predictions: [{ label: 'green', score: expect.any(Number) }] });
    }
  });
});
