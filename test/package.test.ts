// The packed package installed as the README says, then the main job from its bin/.
// It copies about 400 MB and takes a while, so it runs only with CLASSIFY_PACK_TEST=1 (.ci/run sets it).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { jsonLines, ROOT } from './helpers.js';

const enabled = process.env.CLASSIFY_PACK_TEST === '1';
if (!enabled) console.warn('skipping the package install test: set CLASSIFY_PACK_TEST=1 to run it (.ci/run does)');

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const tarball = `${pkg.name}-${pkg.version}.tgz`;
// The README's command for a CPU machine, which the test runs word for word.
const INSTALL = `ONNXRUNTIME_NODE_INSTALL=skip npm install -g ./${tarball}`;

// A user's shell: without the npm_config_* that `npm test` exports (this project's .npmrc among
// them, which an install elsewhere never sees) and without ONNXRUNTIME_NODE_INSTALL from .ci/run.
const KEEP = new Set(['npm_config_cache', 'npm_config_userconfig']);
const userEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => KEEP.has(k.toLowerCase()) || !/^(npm_|onnxruntime_node_install)/i.test(k)),
);

function sh(command: string, cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c', command], { cwd, env: userEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The lines the README's quick start says the main job prints. */
function readmeMainJobOutput(): { path: string; predictions: { label: string; score: number }[] }[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /The second command prints:\n\n```\n([\s\S]*?)```/.exec(readme);
  if (!block) throw new Error('README: the quick start output block is missing');
  return jsonLines(block[1]);
}

describe.runIf(enabled)('the packed package', () => {
  const dir = enabled ? mkdtempSync(join(tmpdir(), 'classify-pack-')) : '';
  afterAll(() => void (dir && rmSync(dir, { recursive: true, force: true })));

  it('installs with the README command, without the CUDA download, and runs the main job from its bin/', { timeout: 300_000 }, async () => {
    expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).toContain(INSTALL);

    // dist/ is built already (npm test's pretest); prepare would rewrite it under the other tests.
    const pack = await sh(`npm pack --ignore-scripts --json --pack-destination "${dir}"`, ROOT);
    expect(pack.code, pack.stderr).toBe(0);
    expect(JSON.parse(pack.stdout)[0].filename).toBe(tarball);

    // --prefer-offline: whatever npm has cached (npm ci's tarballs) without asking the registry again.
    const prefix = join(dir, 'prefix');
    const install = await sh(`${INSTALL} --prefix "${prefix}" --prefer-offline`, dir);
    expect(install.code, install.stderr).toBe(0);
    const installed = join(prefix, 'lib', 'node_modules', pkg.name);
    expect(realpathSync(join(prefix, 'bin', 'classify'))).toBe(realpathSync(join(installed, 'bin', 'classify.js')));
    // Where api.nuget.org answers, the install would not fail but would have downloaded this.
    const ort = join(installed, 'node_modules', 'onnxruntime-node');
    expect(existsSync(join(ort, 'bin', 'napi-v6', 'linux', 'x64', 'libonnxruntime_providers_cuda.so'))).toBe(false);
    expect(existsSync(join(installed, 'node_modules', 'vitest'))).toBe(false); // no dev dependencies

    const job = await sh(`ls fixtures/images/*.jpg | "${join(prefix, 'bin', 'classify')}" --graph fixtures/models/colour -v`, ROOT);
    expect(job.code, job.stderr).toBe(0);
    // The prebuilt JPEG decoder travels in the package and loads from it.
    expect(job.stderr).toMatch(/JPEGs by libjpeg-turbo [\d.]+ \(SIMD, called directly\)/);
    const want = readmeMainJobOutput();
    const got = jsonLines(job.stdout);
    expect(got.map((o) => [o.path, o.predictions.map((p: { label: string }) => p.label)])).toEqual(
      want.map((o) => [o.path, o.predictions.map((p) => p.label)]),
    );
    // Scores as printed, give or take the last digit a different CPU may round differently.
    got.forEach((o, i) => o.predictions.forEach((p: { score: number }, j: number) => expect(p.score).toBeCloseTo(want[i].predictions[j].score, 5)));
  });
});
