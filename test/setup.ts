// After each test file: the models its in-process runs shared are closed (test/helpers.ts).
import { afterAll } from 'vitest';
import { closeSharedModels } from './helpers.js';

afterAll(closeSharedModels);
