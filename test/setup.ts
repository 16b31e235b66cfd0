// Test files share their worker's modules (vitest.config.ts: isolate: false), and so the models
// runInProcess loaded: they stay loaded for the next file (test/helpers.ts closes them when the
// worker's process ends).
import './helpers.js';
