// Folders of numbered model versions (TF-Serving style): which versions there are, and loading
// the highest that works.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describeError } from '../errors.js';
import type { Log } from '../log.js';
import { isFile, MODEL_FILES } from './files.js';

/** Version folders, TF-Serving style: MODEL/1/, MODEL/2/, ... Highest number first. */
export function listVersions(dir: string): number[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries
    .filter((e) => /^\d+$/.test(e) && !isFile(join(dir, e)))
    .map(Number)
    .sort((a, b) => b - a);
}

/** --graph as a folder of numbered versions (not a model folder that happens to hold numbers). */
export function versionsOf(graph: string): number[] {
  if (!existsSync(graph) || isFile(graph) || MODEL_FILES.some(([n]) => isFile(join(graph, n)))) return [];
  return listVersions(graph);
}

/** Loads --graph; a folder of versions gives its highest version that loads, saying which
 * failed and why (a broken new version must not stop the CLI or the server). */
export async function loadNewestWorking<T>(
  graph: string,
  load: (graph: string, version?: string) => Promise<T>,
  log: Log,
): Promise<T> {
  const versions = versionsOf(graph);
  if (versions.length < 2) return load(graph);
  for (const [i, v] of versions.entries()) {
    try {
      return await load(join(graph, String(v)), String(v));
    } catch (err) {
      if (i === versions.length - 1) throw err;
      log(`version ${v} failed to load, trying version ${versions[i + 1]}: ${describeError(err)}`);
    }
  }
  throw new Error('unreachable');
}
