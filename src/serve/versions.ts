// Serving a folder of numbered versions (TF-Serving style): when a higher version appears and
// has stopped changing, load and warm it, then switch to it. A version that fails to load is
// logged and the one serving keeps serving.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Classifier } from '../classifier/classifier.js';
import { listVersions } from '../model/versions.js';
import type { Log } from '../log.js';
import { describeError } from '../errors.js';

/** Names, sizes and times of a version's files: unchanged across two polls means fully written. */
function fingerprint(dir: string): string {
  try {
    return readdirSync(dir)
      .map((f) => {
        const s = statSync(join(dir, f));
        return `${f}:${s.size}:${s.mtimeMs}`;
      })
      .sort()
      .join('|');
  } catch {
    return '';
  }
}

export interface VersionWatch {
  stop(): void;
}

export function watchVersions(
  root: string,
  current: () => string | undefined,
  load: (version: string) => Promise<Classifier>,
  swap: (c: Classifier) => void,
  log: Log,
  intervalMs: number,
): VersionWatch {
  const failed = new Map<string, string>(); // version -> fingerprint that failed
  // Versions above the one serving at start failed to load then (and were logged): retried only
  // once their files change.
  for (const v of listVersions(root)) if (v > Number(current() ?? -1)) failed.set(String(v), fingerprint(join(root, String(v))));
  let candidate: { version: string; print: string } | undefined;
  let busy = false;
  let stopped = false;
  const poll = async () => {
    if (busy) return;
    busy = true;
    try {
      const serving = Number(current() ?? -1);
      // The highest version above the one serving that has not failed as it is now: a broken
      // highest version must not keep a good one below it (and above the one serving) out.
      let version: string | undefined;
      let print = '';
      for (const v of listVersions(root)) {
        if (v <= serving) break;
        print = fingerprint(join(root, String(v)));
        if (failed.get(String(v)) !== print) {
          version = String(v);
          break;
        }
      }
      if (version === undefined) return void (candidate = undefined);
      if (candidate?.version !== version || candidate.print !== print) return void (candidate = { version, print });
      log(`version ${version} found; loading`);
      try {
        const next = await load(version);
        // Stopped (the server drains) while it loaded: it never serves, so it is closed here.
        if (stopped) return void (await next.close());
        swap(next);
        log(`now serving version ${version}`);
      } catch (err) {
        failed.set(version, print);
        log(`version ${version} failed to load, still serving ${current() ?? 'the previous one'}: ${describeError(err)}`);
      }
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void poll(), intervalMs);
  timer.unref();
  return {
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
