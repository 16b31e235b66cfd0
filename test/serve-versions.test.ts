// A broken highest version in a folder of versions: the server and the CLI use the highest
// version that loads and say which one failed, as hot swap does.
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { COLOUR, FIX, jsonLines, runInProcess } from './helpers.js';
import { form, image, post, startServer } from './serve-helpers.js';

const roots: string[] = [];
afterAll(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

/** A folder of versions: each named one is the colour model, or the broken fixture. */
function versions(layout: Record<string, 'good' | 'broken'>): string {
  const root = mkdtempSync(join(tmpdir(), 'classify-serve-versions-'));
  roots.push(root);
  for (const [v, kind] of Object.entries(layout)) cpSync(kind === 'good' ? COLOUR : join(FIX, 'models', 'broken'), join(root, v), { recursive: true });
  return root;
}

const RED = join(FIX, 'images', 'red.jpg');

describe('a broken highest version', () => {
  it('serve starts on the highest version that loads, says which failed, and takes the broken one once it is fixed', async () => {
    const root = versions({ '1': 'good', '2': 'broken', '3': 'broken' });
    const server = await startServer(['--watch-interval', '100'], root);
    try {
      expect(server.stderr()).toMatch(/version 3 failed to load, trying version 2: \S*\/3\/\S+: /);
      expect(server.stderr()).toMatch(/version 2 failed to load, trying version 1: \S*\/2\/\S+: /);
      expect((await (await fetch(`${server.url}/readyz`)).json()).version).toBe('1');
      const r = await post(`${server.url}/?top_k=1`, form(['red.jpg', image('red.jpg')]));
      expect(r.body).toMatchObject({ version: '1', predictions: [{ label: 'red' }] });
      // The watcher does not load the same broken files again...
      await new Promise((r) => setTimeout(r, 500));
      expect(server.stderr()).not.toMatch(/version 3 found/);
      // A good version below the broken highest one, above the one serving, is taken...
      rmSync(join(root, '2'), { recursive: true });
      cpSync(COLOUR, join(root, '2'), { recursive: true });
      await expect.poll(() => server.stderr(), { timeout: 10_000 }).toMatch(/now serving version 2/);
      // ...and a version whose files change is tried again.
      rmSync(join(root, '3'), { recursive: true });
      cpSync(COLOUR, join(root, '3'), { recursive: true });
      await expect.poll(() => server.stderr(), { timeout: 10_000 }).toMatch(/now serving version 3/);
      expect((await (await fetch(`${server.url}/readyz`)).json()).version).toBe('3');
    } finally {
      await server.close();
    }
  });

  it('the CLI classifies with the highest version that loads and says which failed', async () => {
    const root = versions({ '1': 'good', '2': 'broken' });
    const r = await runInProcess(['-g', root, '--with-version', '-k', '1', RED]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/version 2 failed to load, trying version 1: \S*\/2\/\S+: /);
    expect(jsonLines(r.stdout)).toMatchObject([{ path: RED, version: '1', predictions: [{ label: 'red' }] }]);
  });

  it('when no version loads, the CLI and serve exit 2 having said why each failed', async () => {
    const root = versions({ '1': 'broken', '2': 'broken' });
    for (const args of [['-g', root, RED], ['serve', '-g', root, '--port', '0']]) {
      const r = await runInProcess(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/version 2 failed to load, trying version 1: /);
      expect(r.stderr).toMatch(/\/1\/\S+: /); // the last one's error ends the run
      expect(r.stdout).toBe('');
    }
  });
});
