import { aggregationProblem, aggregationValue, groupValues, matchesMetric, propertyText, type MetricRule } from './match.js';

const ev = (eventType: string, properties: Record<string, unknown> = {}) => ({ eventType, properties });

describe('metric matching', () => {
  test('event type filters', () => {
    const rule: MetricRule = { aggregationType: 'COUNT', eventTypeFilter: { in_values: ['a', 'b'] } };
    expect([matchesMetric(rule, ev('a')), matchesMetric(rule, ev('c'))]).toEqual([true, false]);
    const not: MetricRule = { aggregationType: 'COUNT', eventTypeFilter: { not_in_values: ['debug'] } };
    expect([matchesMetric(not, ev('a')), matchesMetric(not, ev('debug'))]).toEqual([true, false]);
  });

  test('property filters: exists, in_values, not_in_values all must pass', () => {
    const rule: MetricRule = {
      aggregationType: 'COUNT',
      propertyFilters: [{ name: 'model', exists: true, in_values: ['large', 'small'] }, { name: 'internal', exists: false }, { name: 'region', not_in_values: ['test'] }],
    };
    expect(matchesMetric(rule, ev('x', { model: 'large' }))).toBe(true);
    expect(matchesMetric(rule, ev('x', { model: 'large', region: 'eu' }))).toBe(true);
    expect(matchesMetric(rule, ev('x', { model: 'huge' }))).toBe(false);
    expect(matchesMetric(rule, ev('x', {}))).toBe(false);
    expect(matchesMetric(rule, ev('x', { model: 'small', internal: false }))).toBe(false);
    expect(matchesMetric(rule, ev('x', { model: 'small', region: 'test' }))).toBe(false);
  });

  test('values compare as text, as PostgreSQL ->> renders them', () => {
    expect(propertyText({ n: 42 }, 'n')).toBe('42');
    expect(propertyText({ b: true }, 'b')).toBe('true');
    expect(propertyText({ s: 'x' }, 's')).toBe('x');
    expect(propertyText({ z: null }, 'z')).toBeNull();
    const rule: MetricRule = { aggregationType: 'COUNT', propertyFilters: [{ name: 'tier', in_values: ['2'] }] };
    expect(matchesMetric(rule, ev('x', { tier: 2 }))).toBe(true);
  });

  test('aggregation values and what ingest refuses', () => {
    const sum: MetricRule = { aggregationType: 'SUM', aggregationKey: 'tokens' };
    expect(aggregationValue(sum, ev('x', { tokens: '12.50' }))).toBe('12.50');
    expect(aggregationValue(sum, ev('x', { tokens: 3 }))).toBe('3');
    expect(aggregationValue(sum, ev('x', {}))).toBeNull();
    expect(aggregationProblem(sum, ev('x', { tokens: 'many' }))).toMatch(/must be a number for SUM/);
    expect(aggregationProblem(sum, ev('x', { tokens: true }))).toMatch(/must be a number/);
    expect(aggregationProblem(sum, ev('x', { tokens: '7' }))).toBeUndefined();
    const unique: MetricRule = { aggregationType: 'UNIQUE', aggregationKey: 'user' };
    expect(aggregationValue(unique, ev('x', { user: 'u1' }))).toBe('u1');
    expect(aggregationProblem(unique, ev('x', { user: { nested: 1 } }))).toBeUndefined();
  });

  test('numbers beyond what Accrue stores in numeric are refused as out of range', () => {
    const sum: MetricRule = { aggregationType: 'SUM', aggregationKey: 'tokens' };
    for (const ok of ['1e999', '-1E-999', '9'.repeat(100), `0.${'9'.repeat(100)}`, `${'1'.repeat(100)}.${'2'.repeat(100)}e-5`]) {
      expect(aggregationProblem(sum, ev('x', { tokens: ok }))).toBeUndefined();
      expect(aggregationValue(sum, ev('x', { tokens: ok }))).toBe(ok);
    }
    for (const bad of ['1e1000000', '1e1000', '1'.repeat(101), `.${'1'.repeat(101)}`]) {
      expect(aggregationProblem(sum, ev('x', { tokens: bad }))).toMatch(/^is out of range for SUM metrics/);
      expect(aggregationValue(sum, ev('x', { tokens: bad }))).toBeNull();
    }
  });

  test('group values cover the union of compound group keys', () => {
    const rule: MetricRule = { aggregationType: 'COUNT', groupKeys: [['region'], ['region', 'model']] };
    expect(groupValues(rule, ev('x', { region: 'eu', model: 'l', other: 1 }))).toEqual({ model: 'l', region: 'eu' });
    expect(groupValues(rule, ev('x', { region: 'eu' }))).toEqual({ model: null, region: 'eu' });
  });
});
