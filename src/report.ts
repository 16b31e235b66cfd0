// What --verbose says about a loaded model, shared by the filter and the server.
import type { ClassifierInfo } from './classifier/classifier.js';
import { wasmJpegAvailable } from './image/jpeg-wasm.js';
import { describeSteps, isExact } from './image/preprocessing.js';
import type { Log } from './log.js';
import { describeSources } from './model/preprocessing.js';

export function describeClassifier(info: ClassifierInfo, log: Log): void {
  const p = info.preprocessing;
  log(`model ${info.model}${info.version ? ` (version ${info.version})` : ''}`);
  log(`labels ${info.labelsFile} (${info.classes} classes)`);
  log(`engine ${info.engine}`);
  for (const note of info.engineNotes) log(`engine note: ${note}`);
  log(`input ${info.input}`);
  log(`preprocessing ${describeSteps(p)}`);
  log(`normalisation mean ${p.mean.join(',')} std ${p.std.join(',')}`);
  log(`preprocessing settings: ${describeSources(info.preprocessingSources)}`);
  log(`decoding ${decoders(isExact(p.resize))}`);
  log(`batch size ${info.batchSize}, max delay ${info.maxDelayMs} ms, ${info.decodeJobs} decode threads, ${info.inFlight} images in flight`);
}

function decoders(exact: boolean): string {
  if (!exact) return 'by sharp (libvips, large JPEGs shrunk while decoding)';
  if (!wasmJpegAvailable()) return 'by sharp (the WebAssembly JPEG decoder, @cwasm/jpeg-turbo, is not installed)';
  return 'small sequential JPEGs by libjpeg-turbo in WebAssembly in the decode threads, the rest by sharp';
}
