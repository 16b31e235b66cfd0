import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One temporary folder for the run, removed at its end (test/global-setup.ts).
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Three files at a time on a 2-core machine: most tests wait (on a server, a timer, a
    // child process) as much as they compute.
    maxWorkers: 3,
    // A worker runs file after file with its modules kept, so the models test/helpers.ts loads are
    // shared between files (each load starts an engine thread and decode threads: about 0.2 s of
    // CPU, 137 of them a run). Every worker lives to the end: one stopped for idleness while the
    // pool handed it a file ends the run with "Terminating worker thread" (tinypool).
    isolate: false,
    // The built code is loaded by Node itself, as the binary loads it, not transformed by vite
    // first (2-3 s of CPU a run).
    server: { deps: { external: [/\/dist\//] } },
    minWorkers: 3,
  },
});
