// The training loss and its gradient, with the two loops that cost (logits = Z.W for each row and
// class; gradient += delta x row) in WebAssembly SIMD, four float32 lanes at a time. Why: in plain
// JS (scalar float64, four rows per weight read) one evaluation on the digits (1,451 rows x 256
// features, 10 classes) took 5.9 ms once optimised and 13-15 ms before, and L-BFGS makes 35 of
// them; here one takes 0.8 ms (each loop 0.27 ms, the softmax in JS most of the rest), and a
// cached `classify retrain` of the digits trains in 51-74 ms against 229-379 (measured 2026-12-05
// on the 2-core VM, both at the same load of about 5). Node has no SIMD for JS, and no wasm
// toolchain comes with it, so the module is written out below, instruction by instruction: four
// small functions, made and compiled once per process (about a millisecond).
//
// After training, the same logits loop gives each row's class for the report (the test rows are
// copied in too): the digits' 1,797 rows in about 2 ms of a cached rerun against 10 for plain JS
// in float64 on the raw features (2026-12-05). Its float32 sums predicted the same class as those
// float64 ones for each of 107,820 rows of 60 trainings on the digits (1 to 12 steps, L-BFGS and
// Adam), and the same reports.
//
// The rows are copied into the module's memory once per `train` and standardised there (z = (x -
// mean) * scale, in float64, then rounded), the mean and scale from sums over the training rows
// taken there too, by two more loops in float64 SIMD that give the scalar JS loops' results to
// the bit: on the digits 1.5 ms against 5-9 for those loops, cold (2026-12-05). The copy is
// needed anyway, and float32 sums of standardised features keep their digits where raw ones would
// cancel against the mean (|mean| / sd reaches 70 on the digits' features). Sums run in float32
// along a row and over the rows; the softmax, the loss and the sums over classes in float64 in
// JS. On the digits the model comes out within 1e-6 (relative, L2) of the float64 loops', with
// the same steps and accuracy. The copy costs its size while training: 50,000 rows of 256
// features, 51 MB more peak RSS (105 to 156 MB in bench/retrain-memory.mjs, which trains 4 times
// faster: 0.64 s against 2.6).

// WebAssembly's binary format (https://webassembly.github.io/spec/core/binary/), the few opcodes
// used. SIMD ones follow the prefix 0xfd as a LEB128 u32.
const OP = {
  block: 0x02,
  loop: 0x03,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  localGet: 0x20,
  localSet: 0x21,
  i32Load: 0x28,
  f32Store: 0x38,
  i32Const: 0x41,
  i32LtU: 0x49,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32Mul: 0x6c,
  f32Add: 0x92,
  simd: 0xfd,
} as const;
const SIMD = {
  v128Load: 0x00,
  v128Load32Splat: 0x09,
  v128Store: 0x0b,
  v128Const: 0x0c,
  f32x4ExtractLane: 0x1f,
  v128Store64Lane: 0x5b,
  v128Load64Zero: 0x5d,
  f32x4DemoteF64x2Zero: 0x5e,
  f64x2PromoteLowF32x4: 0x5f,
  f32x4Add: 0xe4,
  f32x4Mul: 0xe6,
  f64x2Add: 0xf0,
  f64x2Sub: 0xf1,
  f64x2Mul: 0xf2,
} as const;
const TYPE = { i32: 0x7f, v128: 0x7b, func: 0x60, emptyBlock: 0x40 } as const;
const SECTION = { type: 1, import: 2, function: 3, export: 7, code: 10 } as const;
const EXTERNAL = { func: 0x00, memory: 0x02 } as const;

type Bytes = number[];

/** Unsigned LEB128. */
function u32(n: number): Bytes {
  const out: Bytes = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n) byte |= 0x80;
    out.push(byte);
  } while (n);
  return out;
}

/** Signed LEB128 (i32.const's immediate). */
function s32(n: number): Bytes {
  const out: Bytes = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(byte & 0x40)) || (n === -1 && byte & 0x40)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

const vector = (items: Bytes[]): Bytes => [...u32(items.length), ...items.flat()];
const name = (s: string): Bytes => vector([...Buffer.from(s, 'utf8')].map((b) => [b]));
const section = (id: number, body: Bytes): Bytes => [id, ...u32(body.length), ...body];

// Instructions.
const get = (local: number): Bytes => [OP.localGet, ...u32(local)];
const set = (local: number, ...value: Bytes[]): Bytes => [...value.flat(), OP.localSet, ...u32(local)];
const i32 = (n: number): Bytes => [OP.i32Const, ...s32(n)];
const add = (a: Bytes, b: Bytes): Bytes => [...a, ...b, OP.i32Add];
/** local += step */
const bump = (local: number, step: Bytes): Bytes => set(local, add(get(local), step));
const simd = (op: number, ...immediates: number[]): Bytes => [OP.simd, ...u32(op), ...immediates];
/** memarg: log2 of the alignment, then a constant offset. */
const load = (address: Bytes): Bytes => [...address, ...simd(SIMD.v128Load, 4, 0)];
const splat = (address: Bytes): Bytes => [...address, ...simd(SIMD.v128Load32Splat, 2, 0)];
const fadd = (a: Bytes, b: Bytes): Bytes => [...a, ...b, ...simd(SIMD.f32x4Add)];
const fmul = (a: Bytes, b: Bytes): Bytes => [...a, ...b, ...simd(SIMD.f32x4Mul)];
const zero = (): Bytes => simd(SIMD.v128Const, ...new Array(16).fill(0));
const lane = (v: Bytes, i: number): Bytes => [...v, ...simd(SIMD.f32x4ExtractLane, i)];
/** The sum of a vector's four lanes, as an f32. */
const lanesSum = (v: Bytes): Bytes => [...lane(v, 0), ...lane(v, 1), OP.f32Add, ...lane(v, 2), ...lane(v, 3), OP.f32Add, OP.f32Add];
/** Runs `body` at least once, again while `again` (an i32) is non-zero. */
const doWhile = (body: Bytes[], again: Bytes): Bytes => [OP.loop, TYPE.emptyBlock, ...body.flat(), ...again, OP.brIf, 0, OP.end];
const lessThan = (a: Bytes, b: Bytes): Bytes => [...a, ...b, OP.i32LtU];

// Both functions take (rows, end, m, c, stride, out), all byte addresses or counts: `rows` to
// `end` the addresses of the rows to read, four a block (the count a multiple of 4); `stride` a
// row's bytes (a multiple of 16, the row zero-padded). `logits` reads `m`, the c x stride weights,
// and writes `out`, a row of c per row read. `gradient` reads `m`, the deltas (a row of c per row
// read), and adds to `out`, the c x stride gradient.
const [P_ROWS, P_END, P_M, P_C, P_STRIDE, P_OUT] = [0, 1, 2, 3, 4, 5];
// Locals after the parameters: ten i32s (a block's four row addresses, the class, where class k's
// part of m and of out begins, the offset in a row, 4c, an address), then five v128s.
const [L_A, L_K, L_MK, L_OK, L_J, L_CB, L_ADDR] = [6, 10, 11, 12, 13, 14, 15];
const L_V = 16;
const LOCALS = [
  [10, TYPE.i32],
  [5, TYPE.v128],
];
const ROWS = [0, 1, 2, 3];

/** The address of row q's entry in a block laid out a row of c floats per row read. */
const inRow = (base: number, q: number): Bytes => (q === 0 ? get(base) : add(get(base), [...get(L_CB), ...i32(q), OP.i32Mul]));

/** The loops both functions share: over the row blocks (L_A.. the block's four row addresses),
 * then over the classes (L_K; L_MK and L_OK from m and out, moved on by the given steps after
 * each class); after a block, m and out move on by the block steps. */
function overBlocksAndClasses(perClass: Bytes[], steps: { mClass: Bytes; outClass: Bytes; mBlock?: Bytes; outBlock?: Bytes }): Bytes {
  return [
    ...set(L_CB, get(P_C), i32(4), [OP.i32Mul]),
    OP.block, TYPE.emptyBlock,
    OP.loop, TYPE.emptyBlock,
    ...get(P_ROWS), ...get(P_END), OP.i32GeU, OP.brIf, 1,
    ...ROWS.flatMap((q) => set(L_A + q, get(P_ROWS), [OP.i32Load, 2, ...u32(4 * q)])),
    ...set(L_MK, get(P_M)),
    ...set(L_OK, get(P_OUT)),
    ...set(L_K, i32(0)),
    ...doWhile([...perClass, bump(L_MK, steps.mClass), bump(L_OK, steps.outClass), bump(L_K, i32(1))], lessThan(get(L_K), get(P_C))),
    ...(steps.mBlock ? bump(P_M, steps.mBlock) : []),
    ...(steps.outBlock ? bump(P_OUT, steps.outBlock) : []),
    ...bump(P_ROWS, i32(16)),
    OP.br, 0,
    OP.end,
    OP.end,
  ];
}

/** The inner loop, over a row's 16-byte chunks (L_J the offset). */
const overChunks = (body: Bytes[]): Bytes => set(L_J, i32(0)).concat(doWhile([...body, bump(L_J, i32(16))], lessThan(get(L_J), get(P_STRIDE))));
const chunk = (base: number): Bytes => load(add(get(base), get(L_J)));
const blockBytes = (): Bytes => [...get(L_CB), ...i32(4), OP.i32Mul];

/** out[q][k] = row q . weights k. Four rows against a class's weights, each weight chunk read once
 * for the four, four independent sums. */
const LOGITS = overBlocksAndClasses(
  [
    ...ROWS.map((q) => set(L_V + q, zero())),
    overChunks([set(L_V + 4, chunk(L_MK)), ...ROWS.map((q) => set(L_V + q, fadd(get(L_V + q), fmul(chunk(L_A + q), get(L_V + 4)))))]),
    ...ROWS.map((q) => [...inRow(L_OK, q), ...lanesSum(get(L_V + q)), OP.f32Store, 2, 0]),
  ],
  { mClass: get(P_STRIDE), outClass: i32(4), outBlock: blockBytes() },
);

/** gradient[k] += sum over the block's rows of delta[q][k] * row q. */
const GRADIENT = overBlocksAndClasses(
  [
    ...ROWS.map((q) => set(L_V + q, splat(inRow(L_MK, q)))),
    overChunks([
      set(L_ADDR, add(get(L_OK), get(L_J))),
      [
        ...get(L_ADDR),
        ...fadd(
          load(get(L_ADDR)),
          fadd(fadd(fmul(get(L_V), chunk(L_A)), fmul(get(L_V + 1), chunk(L_A + 1))), fadd(fmul(get(L_V + 2), chunk(L_A + 2)), fmul(get(L_V + 3), chunk(L_A + 3)))),
        ),
        ...simd(SIMD.v128Store, 4, 0),
      ],
    ]),
  ],
  { mClass: i32(4), outClass: get(P_STRIDE), mBlock: blockBytes() },
);

// The standardisation's two loops, in float64 two lanes at a time: each lane's operations those
// of the scalar float64 code they replace, in the same order, so the same results to the bit.
// Both take (rows, end, stride, a, b): `rows` to `end` the addresses of the rows to read, one at
// a time; `stride` a row's bytes; `a` and `b` float64 arrays of a value per feature. A row's two
// floats at a time (L_J their offset) as a float64 pair (L_V), and where that pair is in a and b.
const [Q_STRIDE, Q_A, Q_B] = [2, 3, 4];
const pair = (): Bytes => [...get(L_A), ...get(L_J), OP.i32Add, ...simd(SIMD.v128Load64Zero, 3, 0), ...simd(SIMD.f64x2PromoteLowF32x4)];
const pairAt = (base: number): Bytes => add(get(base), [...get(L_J), ...i32(2), OP.i32Mul]);
const f64 = (op: number, a: Bytes, b: Bytes): Bytes => [...a, ...b, ...simd(op)];

/** Over each row (L_A its address), over its float pairs. */
const overRowPairs = (body: Bytes[]): Bytes => [
  OP.block, TYPE.emptyBlock,
  OP.loop, TYPE.emptyBlock,
  ...get(P_ROWS), ...get(P_END), OP.i32GeU, OP.brIf, 1,
  ...set(L_A, get(P_ROWS), [OP.i32Load, 2, 0]),
  ...set(L_J, i32(0)),
  ...doWhile([...body, bump(L_J, i32(8))], lessThan(get(L_J), get(Q_STRIDE))),
  ...bump(P_ROWS, i32(4)),
  OP.br, 0,
  OP.end,
  OP.end,
];

/** a[j] += row[j], b[j] += row[j] * row[j], over the rows in order. */
const MOMENTS = overRowPairs([
  set(L_V, pair()),
  set(L_ADDR, pairAt(Q_A)),
  [...get(L_ADDR), ...f64(SIMD.f64x2Add, load(get(L_ADDR)), get(L_V)), ...simd(SIMD.v128Store, 4, 0)],
  set(L_ADDR, pairAt(Q_B)),
  [...get(L_ADDR), ...f64(SIMD.f64x2Add, load(get(L_ADDR)), f64(SIMD.f64x2Mul, get(L_V), get(L_V))), ...simd(SIMD.v128Store, 4, 0)],
]);

/** row[j] = float32((row[j] - a[j]) * b[j]), in place. */
const STANDARDISE = overRowPairs([
  [
    ...add(get(L_A), get(L_J)),
    ...f64(SIMD.f64x2Mul, f64(SIMD.f64x2Sub, pair(), load(pairAt(Q_A))), load(pairAt(Q_B))),
    ...simd(SIMD.f32x4DemoteF64x2Zero),
    ...simd(SIMD.v128Store64Lane, 3, 0, 0),
  ],
]);

/** The module: imports its memory (env.memory, sized by each Kernel), exports the four functions
 * (all of one type: the standardisation's leave the sixth parameter unused). */
function moduleBytes(): Uint8Array<ArrayBuffer> {
  const signature = [TYPE.func, ...vector(new Array(6).fill([TYPE.i32])), ...vector([])];
  const body = (code: Bytes): Bytes => {
    const fn = [...vector(LOCALS.map(([count, type]) => [...u32(count), type])), ...code, OP.end];
    return [...u32(fn.length), ...fn];
  };
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
    ...section(SECTION.type, vector([signature])),
    ...section(SECTION.import, vector([[...name('env'), ...name('memory'), EXTERNAL.memory, 0x00, ...u32(1)]])),
    ...section(SECTION.function, vector([[0], [0], [0], [0]])),
    ...section(
      SECTION.export,
      vector([
        [...name('logits'), EXTERNAL.func, 0],
        [...name('gradient'), EXTERNAL.func, 1],
        [...name('moments'), EXTERNAL.func, 2],
        [...name('standardise'), EXTERNAL.func, 3],
      ]),
    ),
    ...section(SECTION.code, vector([body(LOGITS), body(GRADIENT), body(MOMENTS), body(STANDARDISE)])),
  ]);
}

let compiled: WebAssembly.Module | undefined;

type Loop = (rows: number, end: number, m: number, c: number, stride: number, out: number) => void;
type RowLoop = (rows: number, end: number, stride: number, a: number, b: number) => void;

/** The softmax layer's training objective over rows of `data`, copied into wasm memory once and
 * standardised there (z = (x - mean) * scale, mean and scale those of the rows given). Parameters
 * `p` as train.ts lays them out: W (d x c), then c biases, on standardised features. */
export class Kernel {
  /** each feature's mean over the rows standardised on */
  readonly mean: Float64Array;
  /** 1 / each feature's standard deviation there; 0 for a feature constant there */
  readonly scale: Float64Array;
  private readonly d: number;
  private readonly c: number;
  private readonly y: Int32Array;
  /** floats a row takes in memory: d rounded up to a multiple of 4 */
  private readonly stride: number;
  /** each row's byte address in memory; 0 for rows not copied (the rows come after the rest) */
  private readonly address: Uint32Array;
  private readonly capacity: number;
  private readonly at: { rows: number; weights: number; gradient: number; logits: number; deltas: number; mean: number; scale: number };
  private readonly rowList: Uint32Array;
  private readonly weights: Float32Array;
  private readonly gradient: Float32Array;
  private readonly logits: Float32Array;
  private readonly deltas: Float32Array;
  private readonly run: { logits: Loop; gradient: Loop };

  /** `data` as train.ts's Data: rows of `x` (n x d) with labels `y`. `rows`: those that evaluations
   * may read (each evaluation at most as many rows as these); `standardiseOn`: those of them whose
   * mean and standard deviation standardise them all (the training rows). */
  constructor(data: { x: Float32Array; y: Int32Array; d: number; classes: number }, rows: readonly number[], standardiseOn: readonly number[]) {
    const { d, classes: c } = data;
    [this.d, this.c, this.y] = [d, c, data.y];
    const stride = (this.stride = Math.max(4, Math.ceil(d / 4) * 4));
    const copied = [...new Set(rows)];
    const capacity = (this.capacity = Math.ceil(copied.length / 4) * 4 || 4);
    // Layout, in floats (every part starts on 16 bytes): the row list, the weights, the gradient,
    // the logits, the deltas, the means and the scales (float64), then the rows.
    const sizes = { rows: capacity, weights: c * stride, gradient: c * stride, logits: capacity * c, deltas: capacity * c, mean: 2 * stride, scale: 2 * stride };
    let end = 0;
    const at = {} as Record<keyof typeof sizes, number>;
    for (const [part, floats] of Object.entries(sizes) as [keyof typeof sizes, number][]) {
      at[part] = end * 4;
      end += Math.ceil(floats / 4) * 4;
    }
    this.at = at;
    const bytes = (end + copied.length * stride) * 4;
    // wasm32 addresses memory with 32 bits.
    if (bytes > 2 ** 32) throw new Error(`${copied.length} rows of ${d} features are too many to train on at once (${bytes} bytes, 4 GiB at most)`);
    const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
    compiled ??= new WebAssembly.Module(moduleBytes());
    const exports = new WebAssembly.Instance(compiled, { env: { memory } }).exports;
    this.run = { logits: exports.logits as Loop, gradient: exports.gradient as Loop };
    const [moments, standardise] = [exports.moments as RowLoop, exports.standardise as RowLoop];
    const view = (part: keyof typeof sizes) => new Float32Array(memory.buffer, at[part], sizes[part]);
    [this.weights, this.gradient, this.logits, this.deltas] = [view('weights'), view('gradient'), view('logits'), view('deltas')];
    this.rowList = new Uint32Array(memory.buffer, at.rows, capacity);
    this.address = new Uint32Array(data.x.length / d);
    const z = new Float32Array(memory.buffer, end * 4, copied.length * stride);
    for (const [slot, row] of copied.entries()) {
      this.address[row] = (end + slot * stride) * 4;
      z.set(data.x.subarray(row * d, (row + 1) * d), slot * stride);
    }
    // The sums of the rows and of their squares (into mean and scale), then those as the mean
    // and 1 / the standard deviation, then every row standardised in place.
    const [mean, scale] = [new Float64Array(memory.buffer, at.mean, stride), new Float64Array(memory.buffer, at.scale, stride)];
    this.eachRowList(standardiseOn, (from, to) => moments(from, to, stride * 4, at.mean, at.scale));
    const n = Math.max(1, standardiseOn.length);
    for (let j = 0; j < stride; j++) {
      mean[j] /= n;
      const sd = Math.sqrt(Math.max(0, scale[j] / n - mean[j] * mean[j]));
      // A feature constant over those rows carries nothing: left at zero.
      scale[j] = sd > 1e-6 ? 1 / sd : 0;
    }
    this.eachRowList(copied, (from, to) => standardise(from, to, stride * 4, at.mean, at.scale));
    [this.mean, this.scale] = [mean.slice(0, d), scale.slice(0, d)];
  }

  /** Weighted mean cross-entropy over `rows` + l2/2 |W|^2; writes the gradient into `grad` when
   * given. The JS parts are functions of their own, small enough to be optimised within the first
   * evaluation. */
  lossAndGradient(p: Float64Array, rows: readonly number[], classWeight: Float64Array, l2: number, grad?: Float64Array): number {
    const { d, c, stride, at } = this;
    const count = this.logitsOf(p, rows);
    const deltaSum = new Float64Array(c);
    const loss = softmax(this.logits, p, d * c, this.y, rows, classWeight, c, this.deltas, deltaSum);
    let total = 0;
    for (const row of rows) total += classWeight[this.y[row]];
    const n = total || 1;
    if (grad) {
      this.deltas.fill(0, rows.length * c, count * c);
      this.gradient.fill(0);
      this.run.gradient(at.rows, at.rows + 4 * count, at.deltas, c, stride * 4, at.gradient);
      gradientOut(this.gradient, stride, p, d, c, n, l2, deltaSum, grad);
    }
    return loss / n + 0.5 * l2 * squares(p, d * c);
  }

  /** Each of `rows`' class under `p`: the highest logit, the first of equal ones. */
  predict(p: Float64Array, rows: readonly number[]): number[] {
    this.logitsOf(p, rows);
    return argmax(this.logits, p, this.d * this.c, rows.length, this.c);
  }

  /** `rows`' addresses into the row list, as many at a time as it holds, each time handed to
   * `run` as the list's first and end addresses. */
  private eachRowList(rows: readonly number[], run: (from: number, to: number) => void): void {
    for (let at = 0; at < rows.length; at += this.capacity) {
      const part = rows.slice(at, at + this.capacity);
      if (!addresses(part, part.length, this.address, this.rowList)) throw new Error('a row not copied for training');
      run(this.at.rows, this.at.rows + 4 * part.length);
    }
  }

  /** The logits of `rows` under p's weights (without the biases) into `logits`, a row of c per
   * row; returns the rows run, a multiple of 4. */
  private logitsOf(p: Float64Array, rows: readonly number[]): number {
    const { d, c, stride, at } = this;
    if (rows.length > this.capacity) throw new Error(`${rows.length} rows in one evaluation, more than the ${this.capacity} copied`);
    transpose(p, d, c, this.weights, stride);
    // A last block short of four repeats the first row, with deltas of 0.
    const count = Math.ceil(rows.length / 4) * 4;
    if (!addresses(rows, count, this.address, this.rowList)) throw new Error('a row not copied for training');
    this.run.logits(at.rows, at.rows + 4 * count, at.weights, c, stride * 4, at.logits);
    return count;
  }
}

/** For each of n rows of c logits, plus the biases (p[biasAt..]), the index of the highest. */
function argmax(logits: Float32Array, p: Float64Array, biasAt: number, n: number, c: number): number[] {
  const out = new Array<number>(n);
  for (let q = 0; q < n; q++) {
    let best = 0;
    let top = -Infinity;
    for (let k = 0; k < c; k++) {
      const v = logits[q * c + k] + p[biasAt + k];
      if (v > top) [best, top] = [k, v];
    }
    out[q] = best;
  }
  return out;
}

/** weights[k][j] = p[j][k]: the d x c weights a class a row, rows `stride` apart. */
function transpose(p: Float64Array, d: number, c: number, weights: Float32Array, stride: number): void {
  for (let k = 0; k < c; k++) for (let j = 0; j < d; j++) weights[k * stride + j] = p[j * c + k];
}

/** list[q] = the address of rows[q], for q up to `count` (past the rows, the first row's); false
 * where a row has no address. */
function addresses(rows: readonly number[], count: number, address: Uint32Array, list: Uint32Array): boolean {
  for (let q = 0; q < count; q++) {
    const a = address[rows[q < rows.length ? q : 0]];
    if (!(a > 0)) return false;
    list[q] = a;
  }
  return true;
}

/** Each row's softmax cross-entropy on its logits plus the biases (p[biasAt..]): writes the row's
 * deltas (its class weight x (probabilities - one-hot)) and adds them to deltaSum; returns the
 * weighted sum of the losses. */
function softmax(
  logits: Float32Array,
  p: Float64Array,
  biasAt: number,
  y: Int32Array,
  rows: readonly number[],
  classWeight: Float64Array,
  c: number,
  deltas: Float32Array,
  deltaSum: Float64Array,
): number {
  const e = new Float64Array(c);
  let loss = 0;
  for (let q = 0; q < rows.length; q++) {
    const o = q * c;
    const label = y[rows[q]];
    const weight = classWeight[label];
    let max = -Infinity;
    for (let k = 0; k < c; k++) max = Math.max(max, (e[k] = logits[o + k] + p[biasAt + k]));
    let sum = 0;
    for (let k = 0; k < c; k++) sum += e[k] = Math.exp(e[k] - max);
    loss -= weight * Math.log(Math.max(e[label] / sum, 1e-300));
    for (let k = 0; k < c; k++) {
      const delta = weight * (e[k] / sum - (k === label ? 1 : 0));
      deltas[o + k] = delta;
      deltaSum[k] += delta;
    }
  }
  return loss;
}

/** grad = the summed gradient (c x stride) / n, laid out as p, + l2 p; the biases' deltaSum / n. */
function gradientOut(sums: Float32Array, stride: number, p: Float64Array, d: number, c: number, n: number, l2: number, deltaSum: Float64Array, grad: Float64Array): void {
  for (let j = 0; j < d; j++) for (let k = 0; k < c; k++) grad[j * c + k] = sums[k * stride + j] / n + l2 * p[j * c + k];
  for (let k = 0; k < c; k++) grad[d * c + k] = deltaSum[k] / n;
}

function squares(p: Float64Array, length: number): number {
  let s = 0;
  for (let j = 0; j < length; j++) s += p[j] * p[j];
  return s;
}
