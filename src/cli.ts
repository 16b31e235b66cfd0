// Command-line parsing: flags to options, errors to exit codes. No classification logic here.
// The commands' options are typed from these definitions (@commander-js/extra-typings): each
// command's options are held to exactly what the command takes, so a flag renamed here or there
// fails to compile.
import type * as Commander from '@commander-js/extra-typings';
import type { OptionValues } from '@commander-js/extra-typings';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Readable, Writable } from 'node:stream';
import type { FilterIO } from './commands/filter.js';
import { describeError, EXIT, invalidValue, ModelError, OutputError, UsageError } from './errors.js';
import { DEFAULTS, type FilterFlags, filterSettings, type ServeFlags, serveSettings } from './settings.js';
import { BACKENDS } from './model/locate.js';
import { FORMATS } from './output/format.js';
import { ICC_MODES, RESIZE_MODES } from './image/preprocessing.js';
import { crop, LIMITS, nonNegativeInt, nonNegativeNumber, oneOf, percentage, positiveInt, positiveNumber, triple, unitInterval } from './options.js';

// CommonJS packages are required, not imported, here and in every module: Node reads an imported
// one's source for its exports first, a cost paid at every start (commander 8 ms against 13.5,
// sharp 32 against 55, prom-client 30 against 45).
const { Command, CommanderError, Option } = createRequire(import.meta.url)('@commander-js/extra-typings') as typeof Commander;
type Command<A extends unknown[], O extends OptionValues> = Commander.Command<A, O>;

/** The streams a run of the CLI uses: the process's own, or a test's. */
export interface CliIO {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable & { isTTY?: boolean; columns?: number };
  /** how the filter loads a model (default Classifier.load) */
  loadClassifier?: FilterIO['loadClassifier'];
  /** where signals come from and exit goes (default: this process) */
  host?: FilterIO['host'];
}

const PROCESS_IO: CliIO = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
const logTo = (stderr: Writable) => (line: string) => void stderr.write(`classify: ${line}\n`);
const log = logTo(process.stderr);

/** What --device may name, checked before the model loads: the providers onnxruntime-node ships. */
const PROVIDERS = ['cpu', 'webgpu', 'cuda', 'tensorrt'] as const;
const DEVICES = ['auto', ...PROVIDERS] as const;

/** The README's first examples, word for word (test/cli.test.ts holds them to it). */
const EXAMPLES = `
Examples:
  ls *.jpg | classify --graph model
  find photos -type f -name '*.jpg' -print0 | classify -0 --graph model > labels.ndjson
`;

/** A command's options, held to what it takes: a required one missing, or one it does not know
 * (a flag renamed on one side only), is a compile error. */
const exactly =
  <Target>() =>
  <T extends Target>(opts: T & Record<Exclude<keyof T, keyof Target>, never>): Target =>
    opts;

/** Which model: the first flags of every command that loads one. */
function modelFlags<A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) {
  return cmd
    .option('-g, --graph <model>', 'model (required): .onnx, frozen graph .pb, TF.js model.json, SavedModel, or a folder holding one')
    .option('-l, --labels <file>', 'labels file, one per line or "index:label" (default: labels.txt beside the model)');
}

/** How the model is run: batching, preprocessing, engine. */
function runFlags<A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) {
  return cmd
    .option('-b, --batch-size <n>', 'images per inference batch (0: 4 on CPU, 16 on a GPU)', nonNegativeInt('--batch-size', LIMITS.batchSize), DEFAULTS.batchSize)
    .option('-d, --max-delay <ms>', 'longest an image waits for its batch to fill', nonNegativeNumber('--max-delay', LIMITS.maxDelayMs), DEFAULTS.maxDelayMs)
    .option('--mean <r,g,b>', 'per-channel mean in 0-255 units, subtracted first', triple('--mean', false))
    .option('--std <r,g,b>', 'per-channel standard deviation in 0-255 units, divided by', triple('--std', true))
    .option(
      '--resize <mode>',
      `how the image is resized: ${RESIZE_MODES.join(', ')} (default: from the model; else tf1 for frozen graphs, bilinear for other TensorFlow models, area for ONNX)`,
      oneOf('--resize', RESIZE_MODES),
    )
    .option('--crop <size>', 'resize the shorter side to N, or the image to HxW, then cut out the centre at the input size; none: no crop (default: from the model, else none)', crop('--crop'))
    .option('--icc <mode>', 'embedded colour profile: apply or ignore (default: from the model; else ignore for TensorFlow models, apply for ONNX)', oneOf('--icc', ICC_MODES))
    .option('--exif-rotate', 'apply the EXIF orientation (default: from the model; else off for TensorFlow models, on for ONNX)')
    .option('--no-exif-rotate', 'take the pixels as stored, ignoring the EXIF orientation')
    .option('--max-pixels <n>', 'refuse images with more pixels (decompression bombs)', positiveInt('--max-pixels'), DEFAULTS.maxPixels)
    .option('--max-file-size <bytes>', 'refuse image files larger than this, before reading them', positiveInt('--max-file-size'), DEFAULTS.maxFileSize)
    .addOption(new Option('--softmax <when>', 'turn raw scores into probabilities').choices(['auto', 'on', 'off'] as const).default(DEFAULTS.softmax))
    .addOption(new Option('--backend <name>', 'inference engine (TensorFlow models: tfjs picks the best TF.js runtime)').choices(BACKENDS).default(DEFAULTS.backend))
    .option('--device <name>', `auto, or an ONNX Runtime execution provider: ${PROVIDERS.join(', ')}`, oneOf('--device', DEVICES), DEFAULTS.device)
    .option('--threads <n>', 'inference threads (0: the engine decides)', nonNegativeInt('--threads', LIMITS.threads), DEFAULTS.threads)
    .option('--decode-jobs <n>', 'decode threads: each reads, decodes, resizes and packs images (0: one per core)', nonNegativeInt('--decode-jobs', LIMITS.decodeJobs), DEFAULTS.decodeJobs)
    .option('--input-node <name>', 'model input to feed (default: the only image input)')
    .option('--output-node <name>', 'model output to read (default: the first)');
}

function answerFlags<A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) {
  return cmd
    .option('-k, --top-k <k>', 'predictions per image', positiveInt('--top-k'), DEFAULTS.topK)
    .option('-t, --threshold <score>', 'drop predictions scoring below this', unitInterval('--threshold'), DEFAULTS.threshold);
}

function cacheFlags<A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) {
  return cmd
    .option('--cache <dir>', 'reuse answers for identical image bytes and model from this folder (shared safely by several processes)')
    .option('--cache-entries <n>', 'most answers --cache keeps; the least recently used go first', positiveInt('--cache-entries'), DEFAULTS.cacheEntries);
}

function chatterFlags<A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) {
  return cmd
    .option('-q, --quiet', 'no progress line, no per-image diagnostics on stderr', false)
    .option('-v, --verbose', 'describe the model, engine and settings on stderr', false);
}

// Checked here, not with requiredOption(): commander would demand the top-level --graph even
// when a subcommand (serve) has its own.
function requireGraph(cmd: Command<unknown[], OptionValues>, graph: string | undefined): string {
  if (graph === undefined) cmd.error("error: required option '-g, --graph <model>' not specified", { exitCode: EXIT.usage });
  return graph;
}

function version(): string {
  return createRequire(import.meta.url)('../package.json').version as string;
}

/** The program; each action reports its exit status through `done`. */
export function buildProgram(io: CliIO = PROCESS_IO, done: (status: number) => void = (status) => (process.exitCode = status)) {
  const log = logTo(io.stderr);
  const base = new Command('classify')
    .description('Classify images: paths on stdin (or as arguments), one line of predictions per path on stdout.')
    .argument('[paths...]', 'image paths (default: read from stdin, one per line)');
  const withModel = modelFlags(base).addOption(new Option('-f, --format <format>', 'output format').choices(FORMATS).default('json' as const));
  const program = chatterFlags(
    cacheFlags(
      runFlags(answerFlags(withModel).option('-0, --null', 'paths on stdin are NUL-separated (find -print0)', false))
        .option('--with-version', 'add the model version to each JSON line', false)
        .option('-o, --output <file>', 'append lines to FILE (each written whole; JSON lines also record size, mtime and model) instead of stdout')
        .option('--resume', 'with -o: skip inputs FILE already answers for this model, unchanged since; retry failed ones', false)
        .option('--reclassify', 'with --resume: accept a FILE last written for another model (its answers are not reused)', false)
        .option('--retry-failed', 'with --resume: also retry inputs that failed in a way their unchanged file cannot mend (corrupt, not an image)', false),
    )
      .option('-r, --remote <urls>', 'classify on classify serve backends (comma-separated URLs) instead of loading --graph', (v: string) => v.split(',').filter(Boolean))
      .option('--remote-in-flight <n>', 'requests in flight per backend', positiveInt('--remote-in-flight'), DEFAULTS.remoteInFlight)
      .option('--remote-timeout <ms>', 'give up on a backend after this long for one image', positiveInt('--remote-timeout'), DEFAULTS.remoteTimeoutMs)
      .option('--remote-refresh <ms>', 'how often --remote hostnames are resolved again', positiveInt('--remote-refresh'), DEFAULTS.remoteRefreshMs),
  )
    .version(version())
    .addHelpText('after', EXAMPLES)
    .enablePositionalOptions()
    .exitOverride();

  const serve = chatterFlags(
    cacheFlags(runFlags(answerFlags(modelFlags(program.command('serve')))))
      .option('--host <address>', 'address to listen on (binding beyond loopback is explicit)', DEFAULTS.host)
      .option('-p, --port <port>', 'port (0: any free port)', nonNegativeInt('--port', 65535), DEFAULTS.port)
      .option('--max-body <bytes>', 'largest request body accepted', positiveInt('--max-body'), DEFAULTS.maxBody)
      .option('--max-buffered <bytes>', 'request bodies held in memory at once, all requests together, before requests get 503', positiveInt('--max-buffered'), DEFAULTS.maxBuffered)
      .option('--body-timeout <ms>', "longest a request's body may take to arrive (then 408)", positiveInt('--body-timeout'), DEFAULTS.bodyTimeoutMs)
      .option('--drain-timeout <ms>', 'after SIGTERM, longest to wait for requests in flight before closing their connections', nonNegativeInt('--drain-timeout'), DEFAULTS.drainTimeoutMs)
      .option('--max-queue <n>', 'images in flight before requests get 503', positiveInt('--max-queue'), DEFAULTS.maxQueue)
      .option('--max-files <n>', 'images in one multipart request', positiveInt('--max-files'), DEFAULTS.maxFiles)
      .option('--watch-interval <ms>', 'how often a folder of model versions is checked for a new one', positiveInt('--watch-interval'), DEFAULTS.watchIntervalMs),
  )
    .description('Serve the model over HTTP: POST / with an image, GET /healthz, /readyz, /metrics.')
    .exitOverride();
  serve.action(async ({ graph, ...flags }) => {
    const settings = serveSettings(exactly<ServeFlags>()({ ...flags, graph: requireGraph(serve, graph) }));
    const { runServe } = await import('./commands/serve.js');
    done(await runServe(settings, log, io.host));
  });

  program
    .command('convert')
    .description('Translate a frozen TensorFlow graph (.pb) to an ONNX model file.')
    .argument('<graph>', 'frozen graph .pb, or a folder holding one')
    .argument('<out>', 'ONNX file to write')
    .option('--input-node <name>', 'graph node to feed (default: found from the graph)')
    .option('--output-node <name>', 'graph node to read (default: final_result, else the softmax)')
    .option('-v, --verbose', 'say what was written', false)
    .exitOverride()
    .action(async (graph, out, opts) => {
      const { convert } = await import('./commands/convert.js');
      convert(graph, out, exactly<Parameters<typeof convert>[2]>()(opts), log);
    });

  const retrain = program
    .command('retrain')
    .description('Learn your own labels: a new last layer for --base from IMAGE_DIR (one sub-folder of photos per label), written to OUT_DIR as a model folder.')
    .argument('<image_dir>', 'one sub-folder per label (the folder name is the label), images at any depth below it')
    .option('--base <model>', 'model to start from (required): an ONNX model, a frozen graph .pb or a TF.js model.json, or a folder holding one')
    .option('-o, --output <out_dir>', 'model folder to write (required); must not exist yet, e.g. models/flowers/3 for a new version')
    .option('--bottleneck-node <name>', 'node whose output are the features (default: what the classifier layer reads, found from the graph)')
    .option('--bottleneck-dir <dir>', 'keep computed bottlenecks here, by image content (default: $XDG_CACHE_HOME/classify/bottlenecks, else ~/.cache/classify/bottlenecks)')
    .option('--testing-percentage <n>', 'share of images held out for the final test', percentage('--testing-percentage'), 10)
    .option('--validation-percentage <n>', 'share of images for choosing the weights kept', percentage('--validation-percentage'), 10)
    .option('--how-many-training-steps <n>', 'optimiser steps (L-BFGS iterations, or Adam batches with --train-batch-size)', positiveInt('--how-many-training-steps'), 200)
    .option('--learning-rate <x>', 'Adam step size (with --train-batch-size)', positiveNumber('--learning-rate'), 0.01)
    .option('--train-batch-size <n>', 'train with Adam on batches of this many images (default: full batch, L-BFGS)', positiveInt('--train-batch-size'))
    .option('--seed <n>', 'seed for batch order (runs with the same seed and images give the same model)', nonNegativeInt('--seed'), 0)
    .option('--min-accuracy <x>', 'exit 1 without writing OUT_DIR when the test accuracy is below this', unitInterval('--min-accuracy'))
    .option('--print-misclassified-test-images', 'list the test images the new model gets wrong', false)
    .option('--flip-left-right', 'train also on copies of the training photos flipped left-right at random', false)
    .option('--random-crop <pct>', 'train also on copies with this margin cropped off at random', percentage('--random-crop'), 0)
    .option('--random-scale <pct>', 'train also on copies scaled up by at most this much at random', percentage('--random-scale'), 0)
    .option('--random-brightness <pct>', 'train also on copies with brightness multiplied up or down by at most this much at random', percentage('--random-brightness'), 0)
    .option('--distorted-copies <n>', 'with a distortion: distorted copies of each training photo', positiveInt('--distorted-copies'), 4)
    .addOption(new Option('--format <format>', "onnx; pb also writes retrain.py's output_graph.pb and output_labels.txt").choices(['onnx', 'pb'] as const).default('onnx' as const))
    .option('--decode-jobs <n>', 'decode threads (0: one per core)', nonNegativeInt('--decode-jobs', LIMITS.decodeJobs), DEFAULTS.decodeJobs)
    .option('--threads <n>', 'inference threads (0: the engine decides)', nonNegativeInt('--threads', LIMITS.threads), DEFAULTS.threads)
    .option('-q, --quiet', 'no progress line', false)
    .option('-v, --verbose', 'say which bottleneck, engine and preprocessing are used', false)
    .exitOverride();
  retrain.action(async (imageDir, { base, output, ...rest }) => {
    const required = (value: string | undefined, flag: string): string =>
      value ?? retrain.error(`error: required option '${flag}' not specified`, { exitCode: EXIT.usage });
    const opts = { ...rest, base: required(base, '--base <model>'), output: required(output, '-o, --output <out_dir>') };
    const { runRetrain } = await import('./commands/retrain.js');
    done(await runRetrain(imageDir, exactly<Parameters<typeof runRetrain>[1]>()(opts), io.stderr, log));
  });

  program
    .command('info')
    .description("Print a model's inputs, outputs, labels, preprocessing and chosen engine.")
    .argument('<model>', 'any model --graph accepts')
    .option('-l, --labels <file>', 'labels file (default: beside the model)')
    .addOption(new Option('--backend <name>', 'inference engine').choices(BACKENDS).default(DEFAULTS.backend))
    .option('--device <name>', `auto, or an ONNX Runtime execution provider: ${PROVIDERS.join(', ')}`, oneOf('--device', DEVICES), DEFAULTS.device)
    .option('--input-node <name>', 'model input to feed')
    .option('--output-node <name>', 'model output to read')
    .option('--json', 'print JSON', false)
    .exitOverride()
    .action(async (model, { json, ...rest }) => {
      const { info, formatInfo } = await import('./commands/info.js');
      const i = await info(model, exactly<Parameters<typeof info>[1]>()({ ...rest, threads: 0 }));
      io.stdout.write(json ? JSON.stringify(i, null, 2) + '\n' : formatInfo(i));
    });

  program.action(async (paths, flags) => {
    const settings = filterSettings(exactly<FilterFlags>()(flags));
    // Imported when used: retrain and info never load the classifier's native code.
    const { runFilter } = await import('./commands/filter.js');
    done(await runFilter(settings, paths, { ...io, log }));
  });
  const output = {
    writeOut: (s: string) => void io.stdout.write(s),
    writeErr: (s: string) => void io.stderr.write(s),
    outputError: (s: string) => log(oneLine(s)),
  };
  for (const cmd of [program, ...program.commands]) cmd.configureOutput(output);
  return program;
}

export async function main(argv = process.argv): Promise<void> {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    // `| head` closes our stdout early: that is the reader saying it has enough, not an error.
    if (err.code === 'EPIPE') process.exit(EXIT.ok);
    log(new OutputError(err).message);
    process.exit(EXIT.output);
  });
  process.exitCode = await run(argv.slice(2));
}

/** TensorFlow's label_image, which classify replaces, spelled its flags this way: its command
 * lines work as they are. '' marks --image, whose value is a path argument. */
const LABEL_IMAGE_FLAGS: Record<string, string> = {
  '--image': '',
  '--output_layer': '--output-node',
  '--input_layer': '--input-node',
  '--input_mean': '--mean',
  '--input_std': '--std',
};

/** label_image's flags as classify's own; `--` ends the flags, as everywhere. `--image` values
 * go after a `--`, so that a photo called `-rf.jpg` or `-o.jpg` is a path, never a flag. */
export function fromLabelImage(args: string[]): string[] {
  const out: string[] = [];
  const images: string[] = [];
  let i = 0;
  for (; i < args.length && args[i] !== '--'; i++) {
    const arg = args[i];
    const [flag, value] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const ours = LABEL_IMAGE_FLAGS[flag];
    if (ours === undefined) out.push(arg);
    else {
      const v = value ?? args[++i];
      if (v === undefined && ours === '') throw new UsageError('option --image <path> argument missing');
      if (v === undefined) out.push(ours); // commander says the value is missing
      else if (ours === '') images.push(v);
      else out.push(ours, v);
    }
  }
  const rest = args.slice(i + 1);
  return images.length > 0 || i < args.length ? [...out, '--', ...images, ...rest] : out;
}

/** Runs one command line (without node and the script) to its exit status. */
export async function run(args: string[], io: CliIO = PROCESS_IO): Promise<number> {
  let status: number = EXIT.ok;
  try {
    const program = buildProgram(io, (s) => (status = s));
    // `classify srve -g M -p 8080` is a mistyped command, not an image called srve: said before
    // commander would stop at a flag that only the command meant takes.
    const first = args.find((a) => !a.startsWith('-'));
    const meant = first !== undefined && first === args[0] && !existsSync(first) ? closest(first, program.commands.map((c) => c.name())) : undefined;
    if (meant && first !== meant) throw new UsageError(`unknown command ${first} (did you mean ${meant}?)`);
    const argv = fromLabelImage(args);
    // After `--` every word is a path: a photo called `serve` is classified, not served. Commander
    // dispatches on the first operand wherever it stands, so with no command named before the
    // `--` (label_image's --image values go after one too) the filter runs without commands.
    const names = program.commands.map((c) => c.name());
    const dash = argv.indexOf('--');
    if (dash >= 0 && !argv.slice(0, dash).some((a) => names.includes(a))) (program.commands as unknown[]).splice(0);
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    return exitFor(err, args.includes('--verbose') || args.includes('-v'), io.stderr);
  }
  return status;
}

/** Commander's messages in classify's form: one line, no "error:" prefix, no quotes around flags,
 * its "(Did you mean ...)" line folded in. */
export function oneLine(message: string): string {
  const [first, ...rest] = message.trim().split('\n');
  // --format xml: commander names neither the flag nor the value; say it as every other bad value.
  const choices = /^error: option '(?:-\w, )?(--[\w-]+)[^']*' argument '([^']*)' is invalid\. Allowed choices are (.*)\.$/.exec(first);
  if (choices) return invalidValue(`one of ${choices[3]}`, choices[1], choices[2]);
  const suggestion = rest.map((l) => /^\(Did you mean (.+)\?\)$/.exec(l.trim())?.[1]).find(Boolean);
  const text = first.replace(/^error: /, '').replace(/^option '[^']*' argument '[^']*' is invalid\. /, '').replace(/'(-[^']*)'/g, '$1');
  return suggestion ? `${text} (did you mean ${suggestion}?)` : text;
}

/** The name in `names` within two edits of `word`, if one is. */
function closest(word: string, names: string[]): string | undefined {
  const distance = (a: string, b: string) => {
    let row = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const next = [i];
      for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      row = next;
    }
    return row[b.length];
  };
  return names.find((n) => distance(word, n) <= Math.min(2, n.length - 2));
}

/** Says what went wrong, once, and picks the exit code. */
export function exitFor(err: unknown, verbose: boolean, stderr: Writable = process.stderr): number {
  const log = logTo(stderr);
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  const known = err instanceof ModelError || err instanceof UsageError ? EXIT.usage : err instanceof OutputError ? EXIT.output : undefined;
  if (known !== undefined) {
    log(describeError(err));
    return known;
  }
  // Anything else is a bug: say so rather than blame the user's input.
  const e = err instanceof Error ? err : new Error(String(err));
  log(`internal error: ${e.message} (a bug in classify; ${verbose ? 'stack below' : '--verbose shows the stack'})`);
  if (verbose && e.stack) stderr.write(`${e.stack}\n`);
  return EXIT.internal;
}
