// Test files share their worker's modules (vitest.config.ts: isolate: false), and so the models
// runInProcess loaded: they stay loaded for the next file, and are closed when the worker ends.
import { closeSharedModels } from './helpers.js';

process.once('beforeExit', () => void closeSharedModels());
