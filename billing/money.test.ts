import { dec, divideAmount, divideAmountRounded, formatUsdCents, jsonDecimal, parseJsonExact, roundAmount, sum, toJsonNumber, USD_CENTS } from './money.js';
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

describe('one rounding point', () => {
  test('DIVIDED parts sum to the total: the remainder goes out a cent at a time', () => {
    const parts = (t: string, n: number) => divideAmount(dec(t), n).map(String);
    expect(parts('1000', 3)).toEqual(['334', '333', '333']);
    expect(parts('1001', 3)).toEqual(['334', '334', '333']);
    expect(parts('-1000', 3)).toEqual(['-334', '-333', '-333']);
    expect(parts('10.5', 4)).toEqual(['3', '3', '2', '2.5']);
    for (const [t, n] of [['1000', 3], ['99999', 7], ['1', 12], ['10.5', 4]] as const) {
      const p = divideAmount(dec(t), n);
      expect(sum(p).toString()).toBe(dec(t).toString());
      expect(sum(p.map((x) => roundAmount(x))).toString()).toBe(roundAmount(dec(t)).toString());
    }
    expect(divideAmountRounded(dec('1000'), 3).map(String)).toEqual(['333', '333', '334']);
  });

  test('the email formats whole cents without rounding of its own', () => {
    expect(formatUsdCents('123456789012345678901')).toBe('$1,234,567,890,123,456,789.01');
    expect(formatUsdCents('-5')).toBe('-$0.05');
    expect(formatUsdCents('2503')).toBe('$25.03');
    expect(() => formatUsdCents('0.5')).toThrow(/whole cents/);
  });

  test('decimals go out in JSON exactly as stored', () => {
    expect(JSON.stringify({ a: jsonDecimal('0.12345678901234567891'), b: jsonDecimal('9007199254740993'), c: jsonDecimal(dec('1e-7')) }))
      .toBe('{"a":0.12345678901234567891,"b":9007199254740993,"c":0.0000001}');
  });
});

describe('stored JSON read back exactly', () => {
  test('a number a double cannot hold keeps every digit through parse and stringify; others stay numbers', () => {
    const text = '{"total":123456789012345678901,"amount_due":9007199254740993,"small":0.1,"scale":1.10,"n":[3,"x",null]}';
    const parsed = parseJsonExact(text) as Record<string, unknown>;
    expect(JSON.stringify(parsed)).toBe('{"total":123456789012345678901,"amount_due":9007199254740993,"small":0.1,"scale":1.1,"n":[3,"x",null]}');
    expect([typeof parsed.small, typeof parsed.scale, typeof parsed.total]).toEqual(['number', 'number', 'object']);
    // What a plain JSON.parse would have sent on.
    expect(JSON.stringify(JSON.parse(text))).toContain('"total":123456789012345680000');
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
