// Issue 24, without a cluster: every object in deploy/kubernetes/ validates against Kubernetes'
// own schemas (kubernetes-models and its KEDA and prometheus-operator packages), the overlays
// build with kustomize where a binary exists, and the manifests and the Dockerfile agree with the
// program: their flags parse with the CLI's own parser, the probe paths answer 200 on a serve
// started with the Deployment's flags, and every classify_* metric the autoscalers, the adapter
// rule and the ServiceMonitor name is one that serve exports.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { buildProgram } from '../src/cli.js';
import { ServerMetrics } from '../src/serve/metrics.js';
import { ROOT } from './helpers.js';
import { type Server, startServer } from './serve-helpers.js';

const KUBE = join(ROOT, 'deploy', 'kubernetes');
type Obj = { apiVersion: string; kind: string; metadata: { name: string }; spec?: any; [k: string]: any };

const yamlFiles = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? yamlFiles(join(dir, e.name)) : e.name.endsWith('.yaml') ? [join(dir, e.name)] : []));
const docs = (text: string): any[] => parseAllDocuments(text).map((d) => d.toJS());
const read = (file: string) => docs(readFileSync(file, 'utf8'));

/** Files that are not Kubernetes objects: kustomize's own, and the adapter's Helm values. */
const notObjects = (f: string) => f.endsWith('kustomization.yaml') || f.endsWith('prometheus-adapter-values.yaml');
const objects: Obj[] = yamlFiles(KUBE)
  .filter((f) => !notObjects(f))
  .flatMap(read);
const find = (kind: string): Obj => {
  const o = objects.find((x) => x.kind === kind);
  if (!o) throw new Error(`no ${kind} in deploy/kubernetes`);
  return o;
};

/** The model class for an object's apiVersion and kind, from the package that holds its group. */
async function modelOf(o: Obj): Promise<new (data: unknown) => { validate(): void }> {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
  const pkg = group === 'keda.sh' ? '@kubernetes-models/keda/keda.sh' : group === 'monitoring.coreos.com' ? '@kubernetes-models/prometheus-operator/monitoring.coreos.com' : group ? `kubernetes-models/${group}` : 'kubernetes-models';
  const mod = (await import(`${pkg}/${version}/${o.kind}`)) as Record<string, new (data: unknown) => { validate(): void }>;
  return mod[o.kind];
}

async function validate(o: Obj): Promise<void> {
  const Model = await modelOf(o);
  new Model(o).validate();
}

/** Parses a command line with the CLI's own parser, the command's action replaced by one that
 * keeps the options: a flag it does not know, or a bad value, throws as it would for a user. */
async function parse(argv: string[]): Promise<Record<string, unknown>> {
  const program = buildProgram();
  let seen: Record<string, unknown> | undefined;
  const keep = (...a: unknown[]) => void (seen = a.find((x) => typeof x === 'object' && x !== null && !Array.isArray(x) && !('commands' in x)) as Record<string, unknown>);
  const silent = { writeErr: () => undefined, writeOut: () => undefined, outputError: () => undefined };
  program.configureOutput(silent);
  for (const c of program.commands) {
    c.configureOutput(silent);
    (c as unknown as { action(fn: typeof keep): void }).action(keep);
  }
  (program as unknown as { action(fn: typeof keep): void }).action(keep);
  await program.parseAsync(['node', 'classify', ...argv]);
  if (!seen) throw new Error(`no options parsed from ${argv.join(' ')}`);
  return seen;
}

/** The Dockerfile's instructions, continuation lines joined. */
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
  .replace(/\\\n/g, ' ')
  .split('\n')
  .filter((l) => l.trim() && !l.trim().startsWith('#'));
/** The entry point after `node /app/bin/classify.js`: the CLI's arguments. */
const ENTRY: string[] = (() => {
  const line = dockerfile.find((l) => l.startsWith('ENTRYPOINT '))!;
  const argv = JSON.parse(line.slice('ENTRYPOINT '.length)) as string[];
  expect(argv.slice(0, 2)).toEqual(['node', '/app/bin/classify.js']);
  return argv.slice(2);
})();

const deployment = find('Deployment');
const container = deployment.spec.template.spec.containers[0];

describe('deploy/kubernetes: every object validates against its schema', () => {
  it.each(objects.map((o) => [`${o.kind} ${o.metadata.name}`, o] as const))('%s', async (_name, o) => {
    await validate(o);
  });

  it('a schema violation is caught (the check can fail)', async () => {
    const broken = structuredClone(deployment);
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'http';
    await expect(validate(broken)).rejects.toThrow(/containerPort/);
  });

  const kustomize = ['kustomize', 'kubectl'].find((bin) => spawnSync(bin, bin === 'kubectl' ? ['kustomize', '--help'] : ['version'], { stdio: 'ignore' }).status === 0);
  const dirs = yamlFiles(KUBE)
    .filter((f) => f.endsWith('kustomization.yaml'))
    .map((f) => relative(ROOT, join(f, '..')));
  if (!kustomize) console.warn('skipping the kustomize builds: neither kustomize nor kubectl (kubectl kustomize) is on PATH');
  it.runIf(kustomize).each(dirs)('kustomize builds %s, and what it builds validates', async (dir) => {
    const r = spawnSync(kustomize!, kustomize === 'kubectl' ? ['kustomize', dir] : ['build', dir], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const built = docs(r.stdout) as Obj[];
    expect(built.length).toBeGreaterThan(0);
    for (const o of built) await validate(o);
    for (const o of built.filter((x) => x.spec?.template?.spec)) expect(o.spec.template.spec.containers[0].image).toBe('classify:0.1.0');
  });
});

describe('the manifests agree with the program', () => {
  let server: Server;
  let metricNames: Set<string>;
  // serve as the Deployment starts it, with the fixtures model and a free loopback port.
  const serveArgs = () => [...container.args, '--host', '127.0.0.1'];
  beforeAll(async () => {
    server = await startServer(serveArgs());
    const text = await (await fetch(`${server.url}/metrics`)).text();
    metricNames = new Set([...text.matchAll(/^# TYPE (classify_\w+) (\w+)/gm)].flatMap(([, name, type]) => (type === 'histogram' ? [name, `${name}_sum`, `${name}_count`, `${name}_bucket`] : [name])));
  });
  afterAll(() => {
    return server?.close();
  });

  it("the Deployment's args follow the image's entry point and parse with the CLI's parser", async () => {
    const opts = await parse([...ENTRY, ...container.args]);
    expect(opts).toMatchObject({ host: '0.0.0.0', port: 9876, graph: '/models' });
    // SIGKILL never cuts the drain short: the grace period covers the preStop pause and the drain.
    const pause = Number(container.lifecycle.preStop.exec.command[1]);
    expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(pause + (opts.drainTimeout as number) / 1000);
    // The model volume is mounted where the entry point reads it.
    expect(container.volumeMounts.map((m: { mountPath: string }) => m.mountPath)).toContain(opts.graph);
    expect(container.securityContext.readOnlyRootFilesystem).toBe(true);
  });

  it('a flag the CLI does not take is refused by that parser (the check can fail)', async () => {
    await expect(parse([...ENTRY, '--drain-timout', '1'])).rejects.toThrow(/unknown option/);
  });

  it("the Job's command line parses, and labels with --remote on the headless Service, -o and --resume", async () => {
    const job = find('Job');
    const script = job.spec.template.spec.containers[0].args[0] as string;
    const line = /node \/app\/bin\/classify\.js ([^;|]*);/.exec(script);
    expect(line).not.toBeNull();
    const opts = await parse(line![1].trim().split(/\s+/));
    const headless = objects.find((o) => o.kind === 'Service' && o.spec.clusterIP === 'None')!;
    expect(opts).toMatchObject({ remote: [`http://${headless.metadata.name}:${headless.spec.ports[0].port}`], output: '/out/labels.ndjson', resume: true, null: true });
  });

  it('the probe paths answer 200 on a serve started with those args, /readyz naming the model', async () => {
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const res = await fetch(`${server.url}${container[probe].httpGet.path}`);
      expect([probe, res.status]).toEqual([probe, 200]);
    }
    const ready = await fetch(`${server.url}/readyz`);
    const body = (await ready.json()) as { fingerprint: string };
    expect(body.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(ready.headers.get('x-model-fingerprint')).toBe(body.fingerprint);
  });

  it('every classify_* metric the ServiceMonitor, the adapter rule, the HPA and KEDA name is exported', () => {
    const adapter = read(join(KUBE, 'overlays', 'hpa', 'prometheus-adapter-values.yaml'))[0];
    const rules = adapter.rules.custom as { seriesQuery: string; name: { as: string }; metricsQuery: string }[];
    const named = (text: string) => [...text.matchAll(/\bclassify_\w+/g)].map((m) => m[0]);
    // The adapter's rules read serve's metrics and serve new names, which the HPA reads.
    const served = new Set(rules.map((r) => r.name.as));
    for (const r of rules) for (const m of named(r.seriesQuery + r.metricsQuery)) expect(metricNames).toContain(m);
    const hpa = find('HorizontalPodAutoscaler');
    const hpaMetrics = hpa.spec.metrics.map((m: { pods: { metric: { name: string } } }) => m.pods.metric.name);
    expect(hpaMetrics.length).toBeGreaterThan(0);
    for (const m of hpaMetrics) expect(served).toContain(m);
    const keda = find('ScaledObject');
    const kedaNames = keda.spec.triggers.flatMap((t: { metadata: { query: string } }) => named(t.metadata.query));
    expect(kedaNames.length).toBeGreaterThan(0);
    for (const m of kedaNames) expect(metricNames).toContain(m);
    // ...and the ServiceMonitor scrapes the path they are on, through the one Service it selects.
    const monitor = find('ServiceMonitor');
    expect(monitor.spec.endpoints[0].path).toBe('/metrics');
    const selected = objects.filter((o) => o.kind === 'Service' && Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => o.metadata.labels?.[k] === v));
    expect(selected.map((s) => s.metadata.name)).toEqual(['classify']);
    // KEDA's job label is the scraped Service's name; the HPA and KEDA aim at the same target.
    expect(keda.spec.triggers[0].metadata.query).toContain(`job="${selected[0].metadata.name}"`);
    expect(keda.spec.triggers[0].metadata.threshold).toBe(hpa.spec.metrics[0].pods.target.averageValue);
  });
});

describe('the Dockerfile', () => {
  it('copies only files that exist and that .dockerignore lets into the build context', () => {
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'));
    // This .dockerignore excludes everything, then lets named paths back in.
    expect(ignore[0]).toBe('*');
    const allowed = ignore.slice(1).map((l) => l.replace(/^!/, '').replace(/\/$/, ''));
    const copies = dockerfile.filter((l) => l.startsWith('COPY ') && !l.includes('--from='));
    expect(copies.length).toBeGreaterThan(0);
    for (const line of copies) {
      const sources = line.split(/\s+/).slice(1, -1);
      for (const src of sources) {
        expect(existsSync(join(ROOT, src)), src).toBe(true);
        expect(allowed.some((a) => src === a || src.startsWith(`${a}/`)), `${src} is let in by .dockerignore`).toBe(true);
      }
    }
  });

  it("its entry point parses with the CLI's parser: serve on 0.0.0.0 with the model at /models", async () => {
    expect(await parse(ENTRY)).toMatchObject({ host: '0.0.0.0', port: 9876, graph: '/models' });
    expect(dockerfile.some((l) => /^ENV .*MALLOC_ARENA_MAX=2/.test(l))).toBe(true);
    expect(dockerfile.filter((l) => l.startsWith('USER ')).pop()).toMatch(/^USER [1-9]\d*(:\d+)?$/);
    expect(dockerfile.filter((l) => l.startsWith('FROM ')).length).toBeGreaterThan(1);
    expect(dockerfile.some((l) => /npm ci --omit=dev/.test(l))).toBe(true);
  });
});

describe('the autoscaling signal', () => {
  it('classify_images_in_flight_seconds_total integrates images in flight over time, up to each scrape', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const metrics = new ServerMetrics();
      const total = async () => Number(/^classify_images_in_flight_seconds_total (\S+)$/m.exec(await metrics.registry.metrics())?.[1]);
      metrics.setInFlight(3);
      vi.advanceTimersByTime(2000);
      metrics.setInFlight(1);
      vi.advanceTimersByTime(1000);
      // 3 images for 2 s, then 1 for 1 s, counted at the scrape though nothing changed since.
      expect(await total()).toBeCloseTo(7, 6);
      metrics.setInFlight(0);
      vi.advanceTimersByTime(5000);
      expect(await total()).toBeCloseTo(7, 6);
    } finally {
      vi.useRealTimers();
    }
  });
});
