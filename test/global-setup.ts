// Builds dist/ first (the tests run the built code: its threads load from dist/), so that
// `npx vitest run` never tests stale code. Every temporary file of a test run, the tests' own and
// those of the processes they start, goes in one folder that is removed when the run ends,
// however the test that made it ended.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

export default function setup(): () => void {
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'inherit' });
  const dir = mkdtempSync(join(tmpdir(), 'classify-tests-'));
  // Traversable like /tmp: the permission test reads a file in it as user "nobody".
  chmodSync(dir, 0o755);
  // os.tmpdir() reads TMPDIR; the test workers, and what they start, inherit it.
  process.env.TMPDIR = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
