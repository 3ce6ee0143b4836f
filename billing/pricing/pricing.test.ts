import { dec, roundAmount } from '../money.js';
import { price, type RateSpec } from './index.js';

/** Table-driven: every row is quantity × rate → exact cents (after the one rounding). */
const tiers = [{ size: '1000', price: '2' }, { size: '9000', price: '1.5' }, { price: '1' }];

const cases: [string, string, RateSpec, string][] = [
  // name, quantity, rate, expected cents
  ['flat, zero usage', '0', { rateType: 'FLAT', price: '3' }, '0'],
  ['flat, fractional price rounds once', '3', { rateType: 'FLAT', price: '0.3333' }, '1'],
  ['flat, half a cent rounds up', '1', { rateType: 'FLAT', price: '0.5' }, '1'],
  ['flat, huge quantity exact', '123456789012345', { rateType: 'FLAT', price: '0.000002' }, '246913578'],
  ['graduated, inside first tier', '999', { rateType: 'TIERED', tiers }, '1998'],
  ['graduated, on the first edge', '1000', { rateType: 'TIERED', tiers }, '2000'],
  ['graduated, one past the first edge', '1001', { rateType: 'TIERED', tiers }, '2002'],
  ['graduated, on the second edge', '10000', { rateType: 'TIERED', tiers }, '15500'],
  ['graduated, into the last tier', '12000', { rateType: 'TIERED', tiers }, '17500'],
  ['graduated, zero usage', '0', { rateType: 'TIERED', tiers }, '0'],
  ['graduated, fractional units', '1000.5', { rateType: 'TIERED', tiers }, '2001'], // 2000 + 0.75 → 2000.75 → 2001
  ['volume, inside first tier', '999', { rateType: 'VOLUME', tiers }, '1998'],
  ['volume, on the first edge stays in it', '1000', { rateType: 'VOLUME', tiers }, '2000'],
  ['volume, one past the edge reprices everything', '1001', { rateType: 'VOLUME', tiers }, '1502'], // 1001 × 1.5 = 1501.5
  ['volume, into the last tier', '12000', { rateType: 'VOLUME', tiers }, '12000'],
  ['volume, zero usage', '0', { rateType: 'VOLUME', tiers }, '0'],
  ['package of 1000 rounding up, partial', '1001', { rateType: 'PACKAGE', price: '500', packageSize: '1000' }, '1000'],
  ['package of 1000 rounding up, exact', '2000', { rateType: 'PACKAGE', price: '500', packageSize: '1000' }, '1000'],
  ['package of 1000 rounding down, partial', '1999', { rateType: 'PACKAGE', price: '500', packageSize: '1000', packageRounding: 'DOWN' }, '500'],
  ['package, zero usage', '0', { rateType: 'PACKAGE', price: '500', packageSize: '1000' }, '0'],
  ['percentage of spend', '12345', { rateType: 'PERCENTAGE', price: '0.1' }, '1235'], // 1234.5 → 1235
  ['subscription, 3 seats', '0', { rateType: 'SUBSCRIPTION', price: '1000', quantity: '3' }, '3000'],
];

describe('pricing models', () => {
  test.each(cases)('%s: %s units', (_name, quantity, rate, cents) => {
    expect(roundAmount(price({ quantity: dec(quantity), rate }).amount).toString()).toBe(cents);
  });

  test('volume and graduated differ on the same usage', () => {
    const q = dec('5000');
    const graduated = price({ quantity: q, rate: { rateType: 'TIERED', tiers } }).amount; // 2000 + 6000
    const volume = price({ quantity: q, rate: { rateType: 'VOLUME', tiers } }).amount; // 7500
    expect([graduated.toString(), volume.toString()]).toEqual(['8000', '7500']);
  });

  test('graduated tier breakdown adds up to the amount', () => {
    const r = price({ quantity: dec('12000'), rate: { rateType: 'TIERED', tiers } });
    expect(r.tierBreakdown!.map((t) => t.quantity.toString())).toEqual(['1000', '9000', '2000']);
    expect(r.tierBreakdown!.reduce((a, t) => a.plus(t.amount), dec(0)).eq(r.amount)).toBe(true);
  });

  test('prorated subscription: half a period of 3 seats', () => {
    const r = price({ quantity: dec(0), rate: { rateType: 'SUBSCRIPTION', price: '1000', quantity: '3', isProrated: true }, prorationFactor: dec('0.5') });
    expect(r.amount.toString()).toBe('1500');
    const full = price({ quantity: dec(0), rate: { rateType: 'SUBSCRIPTION', price: '1000', quantity: '3', isProrated: false }, prorationFactor: dec('0.5') });
    expect(full.amount.toString()).toBe('3000');
  });

  test('bad rates are refused with the field', () => {
    expect(() => price({ quantity: dec(1), rate: { rateType: 'FLAT' } })).toThrow(/price/);
    expect(() => price({ quantity: dec(1), rate: { rateType: 'TIERED', tiers: [{ price: '1' }, { price: '2' }] } })).toThrow(/tiers\[0\]\.size/);
    expect(() => price({ quantity: dec(1), rate: { rateType: 'PACKAGE', price: '1', packageSize: '0' } })).toThrow(/package_size/);
  });
});
