// What --verbose says about a loaded model, shared by the filter and the server.
import type { ClassifierInfo } from './classifier/classifier.js';
import { NATIVE_SWITCH, nativeJpegVersion } from './image/native.js';
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
  const version = nativeJpegVersion();
  if (!version) {
    if (process.env[NATIVE_SWITCH] === '0') return `by sharp (${NATIVE_SWITCH}=0)`;
    return "by sharp (classify's libjpeg-turbo addon did not load: it is built for linux-x64 with glibc 2.14 or later)";
  }
  const jpegs = `sequential 4:2:0, 4:4:4 and grey JPEGs by libjpeg-turbo ${version} (SIMD, called directly) in the decode threads`;
  return exact ? `${jpegs}, the rest by sharp` : `${jpegs} at sharp's shrink-on-load scale, then resized by sharp; the rest by sharp (libvips, large JPEGs shrunk while decoding)`;
}
