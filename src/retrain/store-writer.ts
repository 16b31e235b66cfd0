// The bottleneck store's writer: a thread that writes a batch of computed entries (BottleneckStore.
// flush), so that creating their files costs the main thread nothing.
import { workerData } from 'node:worker_threads';
import { type Batch, writeEntries } from './store.js';

writeEntries(workerData as Batch);
