// The import graph of src/: no module imports itself back, directly or through others, and no
// folder (room) does either. Type-only and dynamic imports count: a cycle through them still ties
// the rooms together, and a dynamic one can turn into a load-order bug when it becomes static.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

const SRC = join(ROOT, 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Module -> the src modules it imports (relative specifiers only; packages are not rooms). */
export function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, 'utf8');
    const specifiers = [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)'(\.[^']+)'/gm)].map((m) => m[1]);
    const targets = specifiers.map((s) => relative(SRC, normalize(join(dirname(file), s.replace(/\.js$/, '.ts')))));
    graph.set(relative(SRC, file), [...new Set(targets)]);
  }
  return graph;
}

/** Strongly connected components of more than one node, or a node that imports itself (Tarjan). */
export function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const order = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    order.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!order.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, order.get(w)!));
    }
    if (low.get(v) === order.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!order.has(v)) visit(v);
  return found;
}

/** The room of a module: its folder under src/, or the file itself for one at the top. */
const room = (module: string) => (module.includes('/') ? module.split('/')[0] + '/' : module);

describe('the import graph of src/', () => {
  it('finds a cycle when there is one (the check itself)', () => {
    const g = new Map([
      ['a.ts', ['b/x.ts']],
      ['b/x.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', ['a.ts']],
    ]);
    expect(cycles(g)).toEqual([['a.ts', 'b/x.ts', 'c.ts']]);
  });

  it('reads every kind of import: static, type-only, dynamic and re-exports', () => {
    const g = importGraph();
    expect(g.get('cli.ts')).toContain('commands/serve.ts'); // import type ... and await import()
    expect(g.get('backends/load.ts')).toContain('convert/tf2onnx.ts'); // await import() only
    expect(g.get('backends/thread-entry.ts')).toContain('backends/load.ts');
  });

  it('ARCHITECTURE.md names every source file (by its path, or by its name in its room)', () => {
    const doc = readFileSync(join(ROOT, 'ARCHITECTURE.md'), 'utf8');
    const unnamed = [...importGraph().keys()].filter((m) => !doc.includes(`src/${m}`) && !doc.includes('`' + m.split('/').pop() + '`'));
    expect(unnamed).toEqual([]);
  });

  it('has no cycle between modules', () => {
    expect(cycles(importGraph())).toEqual([]);
  });

  it('has no cycle between rooms (folders, and the files at the top)', () => {
    const modules = importGraph();
    const rooms = new Map<string, string[]>();
    for (const [from, targets] of modules) {
      const edges = rooms.get(room(from)) ?? [];
      for (const t of targets) if (room(t) !== room(from) && !edges.includes(room(t))) edges.push(room(t));
      rooms.set(room(from), edges);
    }
    expect(cycles(rooms)).toEqual([]);
  });
});
