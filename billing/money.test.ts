import { dec, roundAmount, sum, toJsonNumber, USD_CENTS } from './money.js';
import { assembleInvoice } from './invoice.js';

describe('money', () => {
  test('decimal arithmetic is exact where floats are not', () => {
    expect(dec('0.1').plus(dec('0.2')).toString()).toBe('0.3');
    expect(dec('1.005').times(1000).toString()).toBe('1005');
    expect(sum(Array.from({ length: 10 }, () => dec('0.1'))).toString()).toBe('1');
  });

  test('rounds half-up to whole cents, once', () => {
    expect(roundAmount(dec('2502.5'), USD_CENTS).toString()).toBe('2503');
    expect(roundAmount(dec('2502.4999'), USD_CENTS).toString()).toBe('2502');
    expect(roundAmount(dec('-0.5'), USD_CENTS).toString()).toBe('-1');
  });

  test('refuses non-decimal input', () => {
    expect(() => dec('12abc')).toThrow(/not a decimal/);
    expect(() => dec(Number.NaN)).toThrow(/finite/);
    expect(dec(' 42.50 ').toString()).toBe('42.5');
  });

  test('JSON numbers only for exactly representable amounts', () => {
    expect(toJsonNumber(dec('2503'))).toBe(2503);
    expect(() => toJsonNumber(dec('9007199254740993'))).toThrow(/exactly/);
  });
});

describe('invoice assembly', () => {
  const P = Date.parse;
  const products = new Map([['Tokens', { id: 'Tokens', name: 'Tokens', type: 'USAGE' as const, tags: [] }], ['Calls', { id: 'Calls', name: 'Calls', type: 'USAGE' as const, tags: [] }]]);
  const slice = (quantity: string, price: string, productId = 'Tokens') => ({
    productId, quantity, rate: { rateType: 'FLAT' as const, price },
    startingAt: P('2026-10-01T00:00:00Z'), endingBefore: P('2026-11-01T00:00:00Z'),
  });
  const assemble = (slices: ReturnType<typeof slice>[]) => assembleInvoice({ periodStart: P('2026-10-01T00:00:00Z'), periodEnd: P('2026-11-01T00:00:00Z'), products, slices });

  test('FLAT: quantity × price, each line rounded, total = sum of lines exactly', () => {
    const inv = assemble([slice('1001', '2.5'), slice('3', '0.3333', 'Calls')]);
    expect(inv.lines.map((l) => l.total.toString())).toEqual(['2503', '1']);
    expect(inv.total.toString()).toBe('2504');
    expect(inv.total.equals(sum(inv.lines.map((l) => l.total)))).toBe(true);
  });

  test('zero usage is a zero line, not a missing one', () => {
    const inv = assemble([slice('0', '2.5')]);
    expect(inv.lines).toHaveLength(1);
    expect(inv.total.toString()).toBe('0');
  });

  test('high-precision quantities keep every digit', () => {
    const inv = assemble([slice('0.123456789012345678901', '1000000')]);
    expect(inv.lines[0]!.quantity!.toString()).toBe('0.123456789012345678901');
    expect(inv.total.toString()).toBe('123457');
  });
});
