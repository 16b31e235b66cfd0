import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One temporary folder for the run, removed at its end (test/global-setup.ts).
    globalSetup: ['test/global-setup.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Three files at a time on a 2-core machine: most tests wait (on a server, a timer, a
    // child process) as much as they compute.
    maxWorkers: 3,
    minWorkers: 1,
  },
});
