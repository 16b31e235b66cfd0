// Builds dist/ first (the tests run the built code: its threads load from dist/), so that
// `npx vitest run` never tests stale code. Every temporary file of a test run, the tests' own and
// those of the processes they start, goes in one folder that is removed when the run ends,
// however the test that made it ended.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

/** Newest change under src/ (a file's or a folder's: a deletion changes its folder) or to tsconfig. */
function newestSource(): number {
  const src = join(ROOT, 'src');
  const paths = [src, join(ROOT, 'tsconfig.json'), ...readdirSync(src, { recursive: true, encoding: 'utf8' }).map((p) => join(src, p))];
  return Math.max(...paths.map((p) => statSync(p).mtimeMs));
}

export default function setup(): () => void {
  // Build info newer than every source: dist/ is current, and the 1.5 s tsc takes to find that
  // out (before any test can start) is saved.
  const built = join(ROOT, 'dist', '.tsbuildinfo');
  if (!existsSync(built) || statSync(built).mtimeMs < newestSource()) {
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { stdio: 'inherit' });
    // A source saved unchanged makes tsc emit nothing; dist/ is current all the same.
    const now = new Date();
    utimesSync(built, now, now);
  }
  const dir = mkdtempSync(join(tmpdir(), 'classify-tests-'));
  // Traversable like /tmp: the permission test reads a file in it as user "nobody".
  chmodSync(dir, 0o755);
  // os.tmpdir() reads TMPDIR; the test workers, and what they start, inherit it.
  process.env.TMPDIR = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
