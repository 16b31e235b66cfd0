import { describe, expect, it } from 'vitest';
import { topIndices } from '../src/classifier/ranking.js';
import { formatLine } from '../src/output/format.js';

const ok = { path: 'a b/ü.jpg', predictions: [{ label: 'daisy', score: 0.97312345678 }, { label: 'rose', score: 0.0200001 }] };
const bad = { path: 'x.jpg', error: 'no such file' };

describe('formatLine', () => {
  it('json: the path exactly as given, predictions rounded to 6 decimals', () => {
    expect(JSON.parse(formatLine(ok, 'json'))).toEqual({
      path: 'a b/ü.jpg',
      predictions: [
        { label: 'daisy', score: 0.973123 },
        { label: 'rose', score: 0.02 },
      ],
    });
    expect(JSON.parse(formatLine(bad, 'json'))).toEqual({ path: 'x.jpg', error: 'no such file' });
    expect(JSON.parse(formatLine({ ...ok, version: '2' }, 'json')).version).toBe('2');
  });

  it('json: a path with a newline stays one line', () => {
    const line = formatLine({ path: 'new\nline.jpg', predictions: [] }, 'json');
    expect(line).not.toContain('\n');
    expect(JSON.parse(line).path).toBe('new\nline.jpg');
  });

  it('text: readable, one line, control characters escaped', () => {
    expect(formatLine(ok, 'text')).toBe('a b/ü.jpg: daisy (0.9731), rose (0.0200)');
    expect(formatLine(bad, 'text')).toBe('x.jpg: error: no such file');
    expect(formatLine({ path: 'tab\there\n.jpg', error: 'e' }, 'text')).toBe('tab\\there\\n.jpg: error: e');
  });

  it('text: labels and error texts are escaped too, so one result is always one line', () => {
    const odd = { path: 'a.jpg', predictions: [{ label: 'two\nlines', score: 0.5 }, { label: 'tab\tbed', score: 0.25 }] };
    expect(formatLine(odd, 'text')).toBe('a.jpg: two\\nlines (0.5000), tab\\tbed (0.2500)');
    expect(formatLine({ path: 'b.jpg', error: 'bad\r\nthing' }, 'text')).toBe('b.jpg: error: bad\\r\\nthing');
  });

  it('tsv: path, status, then label/score pairs', () => {
    expect(formatLine(ok, 'tsv').split('\t')).toEqual(['a b/ü.jpg', 'ok', 'daisy', '0.973123', 'rose', '0.02']);
    expect(formatLine(bad, 'tsv').split('\t')).toEqual(['x.jpg', 'error', 'no such file']);
  });
});

describe('topIndices', () => {
  it('returns the k largest, largest first', () => {
    const v = Float32Array.from([0.1, 0.5, 0.05, 0.3, 0.05]);
    expect(topIndices(v, 3)).toEqual([1, 3, 0]);
    expect(topIndices(v, 10)).toEqual([1, 3, 0, 2, 4]);
  });

  it('agrees with a full sort on random scores', () => {
    const v = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 12.9898) * 43758.5453 - Math.floor(Math.sin(i * 12.9898) * 43758.5453));
    const sorted = [...v.keys()].sort((a, b) => v[b] - v[a]);
    expect(topIndices(v, 7).map((i) => v[i])).toEqual(sorted.slice(0, 7).map((i) => v[i]));
  });
});
