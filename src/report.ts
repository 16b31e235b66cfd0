// What --verbose says about a loaded model, shared by the filter and the server.
import type { ClassifierInfo } from './classifier.js';

export type Log = (line: string) => void;

export function describeClassifier(info: ClassifierInfo, log: Log): void {
  const n = info.normalisation;
  log(`model ${info.model}${info.version ? ` (version ${info.version})` : ''}`);
  log(`labels ${info.labelsFile} (${info.classes} classes)`);
  log(`engine ${info.engine}`);
  for (const note of info.engineNotes) log(`engine note: ${note}`);
  log(`input ${info.input}`);
  log(`normalisation mean ${n.mean.join(',')} std ${n.std.join(',')} (from ${info.normalisationSource})`);
  log(`batch size ${info.batchSize}, max delay ${info.maxDelayMs} ms, ${info.decodeJobs} decode jobs`);
}
