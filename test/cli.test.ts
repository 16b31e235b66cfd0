// The CLI end to end, as a child process: stdin to stdout, exit codes, stderr.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it, onTestFinished } from 'vitest';
import { BIN, COLOUR, FIX, jsonLines, lines, ROOT, runCli, runInProcess } from './helpers.js';

const img = (name: string) => join('fixtures', 'images', name);
const broken = (name: string) => join('fixtures', 'broken', name);
const GOOD: [string, string][] = [
  [img('red.jpg'), 'red'],
  [img('green.jpg'), 'green'],
  [img('blue.jpg'), 'blue'],
  [img('blue-alpha.png'), 'blue'],
  [img('green.webp'), 'green'],
];
// Tests that need something of the machine say why they skip.
// script(1) gives the CLI a pseudo-terminal.
const hasScript = spawnSync('script', ['--version']).status === 0;
if (!hasScript) console.warn('skipping the TTY test: util-linux script(1) is not installed');
// root reads anything: the permission test then runs the CLI as "nobody".
const unprivileged = ((): { uid?: number; gid?: number } | undefined => {
  if (process.getuid?.() !== 0) return {};
  const id = (flag: string) => spawnSync('id', [flag, 'nobody'], { encoding: 'utf8' });
  const [uid, gid] = [id('-u'), id('-g')];
  if (uid.status === 0 && gid.status === 0) return { uid: Number(uid.stdout), gid: Number(gid.stdout) };
  console.warn('skipping the permission test: running as root and there is no user "nobody" to run as');
  return undefined;
})();
const BAD = [
  broken('empty.jpg'),
  broken('not-an-image.jpg'),
  broken('truncated.jpg'),
  broken('bomb.png'),
  broken('a-directory.jpg'),
  'fixtures/no-such-file.jpg',
];

describe('classify (filter)', () => {
  it('classifies each image by its dominant colour, one JSON line per path, in order', async () => {
    const r = await runInProcess(['--graph', COLOUR], GOOD.map(([p]) => p).join('\n') + '\n');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const out = jsonLines(r.stdout);
    expect(out.map((o) => o.path)).toEqual(GOOD.map(([p]) => p));
    expect(out.map((o) => o.predictions[0].label)).toEqual(GOOD.map(([, label]) => label));
    for (const o of out) {
      expect(o.predictions).toHaveLength(3);
      expect(o.predictions[0].score).toBeGreaterThan(0.95);
      const scores = o.predictions.map((p: { score: number }) => p.score);
      expect(scores).toEqual([...scores].sort((a, b) => b - a));
    }
  });

  it('gives every bad input its own error line and exits 1; the good ones still succeed', async () => {
    // Good and bad interleaved, repeated: more lines than a batch, so batches mix both.
    const input: string[] = [];
    for (let i = 0; i < 6; i++) input.push(...BAD, ...GOOD.map(([p]) => p));
    const r = await runInProcess(['-g', COLOUR, '-b', '4'], input.join('\n') + '\n');
    expect(r.code).toBe(1);
    const out = jsonLines(r.stdout);
    expect(out.map((o) => o.path)).toEqual(input);
    const byPath = new Map(out.map((o) => [o.path, o]));
    expect(byPath.get(broken('empty.jpg')).error).toBe('empty file');
    expect(byPath.get(broken('not-an-image.jpg')).error).toMatch(/not an image/);
    expect(byPath.get(broken('truncated.jpg')).error).toMatch(/corrupt or truncated/);
    expect(byPath.get(broken('bomb.png')).error).toMatch(/12000x12000 exceeds the pixel limit/);
    expect(byPath.get(broken('a-directory.jpg')).error).toBe('is a directory');
    expect(byPath.get('fixtures/no-such-file.jpg').error).toBe('no such file');
    for (const o of out) {
      if (BAD.includes(o.path)) expect(o.predictions).toBeUndefined();
      else expect(o.predictions[0].label).toBe(GOOD.find(([p]) => p === o.path)![1]);
    }
    // Diagnostics go to stderr, one per failure, naming the path.
    expect(lines(r.stderr).filter((l) => l.includes('no-such-file.jpg'))).toHaveLength(6);
  });

  it('--quiet keeps stderr empty even when images fail', async () => {
    const r = await runInProcess(['-g', COLOUR, '-q'], `${broken('empty.jpg')}\n${img('red.jpg')}\n`);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    expect(lines(r.stdout)).toHaveLength(2);
  });

  it('takes paths as arguments instead of stdin', async () => {
    const r = await runInProcess(['-g', COLOUR, img('red.jpg'), img('blue.jpg')]);
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(['red', 'blue']);
  });

  it('tolerates CRLF line ends and skips blank lines', async () => {
    const r = await runInProcess(['-g', COLOUR], `\r\n${img('red.jpg')}\r\n\r\n   \n${img('green.jpg')}\r\n`);
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.path)).toEqual([img('red.jpg'), img('green.jpg')]);
  });

  it('-0 reads NUL-separated paths with spaces, unicode and newlines, echoed exactly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'classify odd '));
    const names = ['with space.jpg', 'ünïcødé 🌼.jpg', 'new\nline.jpg', 'tab\there.jpg'].map((n) => join(dir, n));
    for (const n of names) copyFileSync(join(FIX, 'images', 'red.jpg'), n);
    const r = await runInProcess(['-g', COLOUR, '-0'], names.join('\0') + '\0');
    expect(r.code).toBe(0);
    const out = jsonLines(r.stdout);
    expect(out.map((o) => o.path)).toEqual(names);
    expect(out.every((o) => o.predictions[0].label === 'red')).toBe(true);
  });

  it('text and tsv formats: one line per input', async () => {
    const input = `${img('red.jpg')}\n${broken('empty.jpg')}\n`;
    const text = await runInProcess(['-g', COLOUR, '-f', 'text', '-k', '2', '-q'], input);
    expect(lines(text.stdout)).toHaveLength(2);
    expect(lines(text.stdout)[0]).toMatch(/^fixtures\/images\/red\.jpg: red \(0\.9\d{3}\), (green|blue) \(0\.\d{4}\)$/);
    expect(lines(text.stdout)[1]).toBe('fixtures/broken/empty.jpg: error: empty file');
    const tsv = await runInProcess(['-g', COLOUR, '-f', 'tsv', '-k', '1', '-q'], input);
    const [good, bad] = lines(tsv.stdout).map((l) => l.split('\t'));
    expect(good.slice(0, 3)).toEqual(['fixtures/images/red.jpg', 'ok', 'red']);
    expect(Number(good[3])).toBeGreaterThan(0.95);
    expect(bad).toEqual(['fixtures/broken/empty.jpg', 'error', 'empty file']);
  });

  it('--top-k and --threshold limit the predictions', async () => {
    const top1 = jsonLines((await runInProcess(['-g', COLOUR, '-k', '1', img('red.jpg')])).stdout)[0];
    expect(top1.predictions.map((p: { label: string }) => p.label)).toEqual(['red']);
    const above = jsonLines((await runInProcess(['-g', COLOUR, '-t', '0.5', img('grey.jpg'), img('red.jpg')])).stdout);
    expect(above[0].predictions).toEqual([]); // grey: every class near 1/3
    expect(above[1].predictions).toHaveLength(1);
  });

  it('runs NHWC models and turns raw scores into probabilities', async () => {
    const r = await runInProcess(['-g', join(FIX, 'models', 'colour-nhwc'), img('green.jpg')]);
    expect(r.code).toBe(0);
    const [o] = jsonLines(r.stdout);
    expect(o.predictions[0].label).toBe('green');
    const sum = o.predictions.reduce((s: number, p: { score: number }) => s + p.score, 0);
    expect(sum).toBeCloseTo(1, 4);
  });

  it('runs models with a fixed batch of one, whatever --batch-size says', async () => {
    const input = Array.from({ length: 12 }, (_, i) => GOOD[i % GOOD.length][0]);
    const r = await runInProcess(['-g', join(FIX, 'models', 'colour-batch1'), '-b', '8', '-v'], input.join('\n'));
    expect(r.code).toBe(0);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(input.map((p) => GOOD.find(([q]) => q === p)![1]));
    expect(r.stderr).toMatch(/fixed batch of 1/);
    expect(r.stderr).toMatch(/batch size 1,/);
  });

  it('--verbose describes the model, engine, input and batching on stderr', async () => {
    // --device cpu: on a machine with a GPU, auto would pick it (and batch 16).
    const r = await runInProcess(['-g', COLOUR, '-v', '--device', 'cpu', img('red.jpg')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/classify: model .*colour\/model\.onnx/);
    expect(r.stderr).toMatch(/classify: engine onnxruntime-node [\d.]+ \(cpu\)/);
    expect(r.stderr).toMatch(/classify: input image float32 NCHW 16x16/);
    expect(r.stderr).toMatch(/normalisation mean 0,0,0 std 255,255,255/);
    expect(r.stderr).toMatch(/batch size 4, max delay 10 ms/); // the CPU default
  });

  it('a model cheaper than a decode runs on one ONNX Runtime thread on a small machine, unless --threads says otherwise', async () => {
    // The colour model infers in microseconds: on a few cores the decode threads bound throughput.
    const auto = await runInProcess(['-g', COLOUR, '-v', img('red.jpg')]);
    if (availableParallelism() <= 4) expect(auto.stderr).toMatch(/engine note: one intra-op thread: an inference takes [\d.]+ ms/);
    expect(jsonLines(auto.stdout)[0].predictions[0].label).toBe('red');
    const two = await runInProcess(['-g', COLOUR, '-v', '--threads', '2', img('red.jpg')]);
    expect(two.stderr).not.toMatch(/one intra-op thread/);
  });

  it('--device auto tries WebGPU where a Vulkan driver is installed, and falls back to the CPU when it cannot start', async () => {
    // A Vulkan loader that is not a library and a driver manifest: detection says "try WebGPU",
    // ONNX Runtime cannot start it, and every image is still classified, on the CPU.
    const dir = mkdtempSync(join(tmpdir(), 'classify-vk-'));
    writeFileSync(join(dir, 'libvulkan.so.1'), 'not a library');
    writeFileSync(join(dir, 'gpu_icd.json'), '{"file_format_version":"1.0.0","ICD":{"library_path":"none.so","api_version":"1.3.0"}}');
    const env = { ...process.env, NO_COLOR: '1', LD_LIBRARY_PATH: dir, VK_DRIVER_FILES: join(dir, 'gpu_icd.json') };
    const r = await runCli(['-g', COLOUR, '-v', img('red.jpg'), img('blue.jpg')], '', { env });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/engine note: webgpu execution provider unavailable/);
    expect(r.stderr).toMatch(/engine note: using cpu/);
    expect(r.stderr).toMatch(/classify: engine onnxruntime-node [\d.]+ \(cpu\)/);
    expect(jsonLines(r.stdout).map((o) => o.predictions[0].label)).toEqual(['red', 'blue']);
    // --device cpu never tries it.
    const cpu = await runCli(['-g', COLOUR, '-v', '--device', 'cpu', img('red.jpg')], '', { env });
    expect(cpu.code).toBe(0);
    expect(cpu.stderr).not.toMatch(/webgpu/);
  });

  it.skipIf(!hasScript)('shows a coloured progress line on a real terminal, and none on a pipe', () => {
    const run = (env: Record<string, string | undefined>, flags = '') => {
      const cmd = `printf '%s\\n' ${img('red.jpg')} ${img('green.jpg')} | "${process.execPath}" "${BIN}" -g "${COLOUR}" ${flags} > /dev/null`;
      // script(1) gives the command a pseudo-terminal: stderr is then a TTY. CI is unset because
      // chalk turns colour off under a CI it does not know, even on a terminal.
      const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, TERM: 'xterm-256color', CI: undefined, ...env } });
      return r.stdout;
    };
    const tty = run({ NO_COLOR: undefined, FORCE_COLOR: undefined });
    expect(tty).toMatch(/1 done/);
    expect(tty).toMatch(/images\/s/);
    expect(tty).toMatch(/\x1b\[3\dm/); // coloured
    // A pipe or file is never drawn on: the other tests' stderr is always empty on success.
  });

  it('draws no progress line on a terminal with NO_COLOR or --quiet', async () => {
    const paths = `${img('red.jpg')}\n${img('green.jpg')}\n`;
    expect((await runInProcess(['-g', COLOUR], paths, { stderrTTY: true })).stderr).toMatch(/1 done/);
    expect((await runInProcess(['-g', COLOUR, '--quiet'], paths, { stderrTTY: true })).stderr).toBe('');
    process.env.NO_COLOR = '1';
    onTestFinished(() => void delete process.env.NO_COLOR);
    expect((await runInProcess(['-g', COLOUR], paths, { stderrTTY: true })).stderr).not.toMatch(/done/);
  });

  it('answers a trickled path before stdin closes', async () => {
    const stdin = new PassThrough();
    let answered!: (line: string) => void;
    const first = new Promise<string>((resolve) => (answered = resolve));
    const run = runInProcess(['-g', COLOUR, '--max-delay', '20'], stdin, { onStdout: (soFar) => soFar.includes('\n') && answered(soFar) });
    stdin.write(`${img('blue.jpg')}\n`); // and keep stdin open
    expect(JSON.parse(await first).predictions[0].label).toBe('blue');
    let ended = false;
    void run.then(() => (ended = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(ended).toBe(false); // still reading
    stdin.end();
    expect((await run).code).toBe(0);
  });

  it('ends quietly with status 0 when the reader stops early (| head)', () => {
    const cmd = `yes ${img('red.jpg')} | head -n 3000 | "${process.execPath}" "${BIN}" -g "${COLOUR}" | head -n 3; echo "status \${PIPESTATUS[2]}" >&2`;
    const r = spawnSync('bash', ['-c', cmd], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(lines(r.stdout)).toHaveLength(3);
    expect(r.stderr.trim()).toBe('status 0');
  });

  it('Ctrl-C stops reading, writes what was in flight, exits 130', async () => {
    const child = spawn(process.execPath, [BIN, '-g', COLOUR], { cwd: ROOT });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    child.stdin.write(`${img('red.jpg')}\n${img('green.jpg')}\n`);
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => lines(out).length === 2 && (clearInterval(poll), resolve()), 10);
    });
    child.kill('SIGINT');
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(130);
    expect(jsonLines(out).map((o) => o.predictions[0].label)).toEqual(['red', 'green']);
    expect(err).not.toMatch(/Error|at /);
  });

  it.skipIf(unprivileged === undefined)('reports permission denied for an unreadable file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'classify-perm-'));
    chmodSync(dir, 0o755);
    const locked = join(dir, 'locked.jpg');
    copyFileSync(join(FIX, 'images', 'red.jpg'), locked);
    chmodSync(locked, 0o000);
    const r = await runCli(['-g', COLOUR, '-q'], `${locked}\n${join(ROOT, img('red.jpg'))}\n`, unprivileged);
    expect(r.code).toBe(1);
    const [denied, fine] = jsonLines(r.stdout);
    expect(denied).toEqual({ path: locked, error: 'permission denied' });
    expect(fine.predictions[0].label).toBe('red');
  });
});

describe('classify: usage and model errors exit 2 before reading stdin', () => {
  // stdin stays open: a process that waited for input would hang here and time out.
  function runWithOpenStdin(args: string[]) {
    return new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' } });
      let stderr = '';
      let stdout = '';
      child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
      child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
      child.on('exit', (code) => resolve({ code, stderr, stdout }));
    });
  }

  it('a bad flag value names the flag, what was expected and what was received', async () => {
    const r = await runWithOpenStdin(['-g', COLOUR, '--batch-size', '-1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Expected integer from 0 to 1024 for --batch-size but received "-1"/);
    const mean = await runWithOpenStdin(['-g', COLOUR, '--mean', '1,2']);
    expect(mean.code).toBe(2);
    expect(mean.stderr).toMatch(/Expected one or three numbers for --mean but received "1,2"/);
    const device = await runWithOpenStdin(['-g', COLOUR, '--device', 'gpu0']);
    expect(device.code).toBe(2);
    expect(device.stderr).toMatch(/Expected one of auto, cpu, webgpu, .* for --device but received "gpu0"/);
  });

  it('an unknown flag or format is a usage error', async () => {
    expect((await runWithOpenStdin(['-g', COLOUR, '--frobnicate'])).code).toBe(2);
    const r = await runWithOpenStdin(['-g', COLOUR, '-f', 'xml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/json, text, tsv/);
  });

  it('--graph is required', async () => {
    const r = await runWithOpenStdin([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--graph/);
  });

  it('a missing model names the path', async () => {
    const r = await runWithOpenStdin(['-g', 'fixtures/models/nope.onnx']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('classify: fixtures/models/nope.onnx: no such file or directory\n');
  });

  it('a corrupt model names the file and the reason', async () => {
    const r = await runWithOpenStdin(['-g', 'fixtures/models/broken']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^classify: fixtures\/models\/broken\/model\.onnx: /);
    expect(lines(r.stderr)).toHaveLength(1);
  });

  it('labels that do not match the model output are refused at load', async () => {
    const r = await runWithOpenStdin(['-g', COLOUR, '--labels', 'fixtures/labels-4.txt']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('classify: fixtures/labels-4.txt: has 4 labels but the model outputs 3 scores\n');
    expect(r.stdout).toBe('');
  });

  it('--help exits 0', async () => {
    const r = await runInProcess(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--batch-size/);
  });
});

describe('--help and the README say the same', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  /** The long flags of a README section's tables and lists, up to the next heading. */
  const readmeFlags = (heading: string) => {
    const start = readme.indexOf(heading);
    const section = readme.slice(start, readme.indexOf('\n#', start + heading.length));
    return new Set(section.split('\n').filter((l) => l.startsWith('| `-')).flatMap((l) => [...l.split(' | ')[0].matchAll(/--[a-z0-9-]+/g)].map((m) => m[0])));
  };
  /** The long flags --help lists, in its order. */
  const helpFlags = (text: string) => [...text.matchAll(/^ {2}(?:-\w, )?(--[a-z0-9-]+)/gm)].map((m) => m[1]);

  it('the filter: --graph first, every flag in the README table and no other, the README\'s first examples', async () => {
    const r = await runInProcess(['--help']);
    const flags = helpFlags(r.stdout);
    expect(flags[0]).toBe('--graph');
    expect(new Set(flags)).toEqual(readmeFlags('### Flags'));
    const examples = lines(r.stdout.slice(r.stdout.indexOf('Examples:'))).slice(1);
    expect(examples).toHaveLength(2);
    for (const example of examples) expect(readme).toContain(example.trim());
  });

  it("every default the README's tables quote is the code's", async () => {
    const { buildProgram } = await import('../src/cli.js');
    const { DEFAULT_BATCH } = await import('../src/classifier/classifier.js');
    const program = buildProgram();
    const serve = program.commands.find((c) => c.name() === 'serve')!;
    /** The flag rows of the filter's table (### Flags) and of serve's own (| serve flag |). */
    const section = (heading: string) => readme.slice(readme.indexOf(heading), readme.indexOf('\n#', readme.indexOf(heading) + heading.length));
    const rows = [section('### Flags'), section('| serve flag |')].join('\n').split('\n').filter((l) => l.startsWith('| `-'));
    const defaultCell = (long: string) => rows.find((l) => new RegExp(`(^\\| \`|, )${long}[ \`,]`).test(l.split(' | ')[0]))?.split(' | ')[1];
    let checked = 0;
    for (const o of [...program.options, ...serve.options]) {
      if (o.defaultValue === undefined || o.defaultValue === false || o.negate) continue;
      expect(defaultCell(o.long!), o.long).toMatch(new RegExp(`^\`${String(o.defaultValue).replace(/\./g, '\\.')}\``));
      checked++;
    }
    expect(checked).toBeGreaterThan(30);
    expect(defaultCell('--batch-size')).toContain(`${DEFAULT_BATCH.cpu} on CPU, ${DEFAULT_BATCH.accelerator} on a GPU`);
  });

  it('serve: --graph first, every flag in the README table and no other', async () => {
    const r = await runInProcess(['serve', '--help']);
    const flags = helpFlags(r.stdout);
    expect(flags[0]).toBe('--graph');
    const listed = readmeFlags('| serve flag |');
    const start = readme.indexOf('| all model flags |');
    for (const m of readme.slice(start, readme.indexOf('\n', start)).matchAll(/--[a-z0-9-]+/g)) listed.add(m[0]);
    for (const short of readme.slice(start, readme.indexOf('\n', start)).matchAll(/`-([qv])`/g)) listed.add(short[1] === 'q' ? '--quiet' : '--verbose');
    expect(new Set(flags)).toEqual(new Set([...listed, '--help']));
  });

  it('retrain: every flag in the README table and no other', async () => {
    const r = await runCli(['retrain', '--help']);
    expect(new Set(helpFlags(r.stdout))).toEqual(new Set([...readmeFlags('| retrain flag |'), '--help']));
  });
});
