import { dec, roundAmount } from './money.js';
import { stripeItems } from './stripe-items.js';

const sum = (xs: { amount: number }[]) => xs.reduce((s, x) => s + x.amount, 0);

describe('stripeItems: Accrue lines as Stripe integer cents', () => {
  test.each([
    ['whole cents stay as they are', [['Calls', '1234'], ['Storage', '66']], '1300', [1234, 66]],
    ['fractions: the left-over cents go to the largest fractions', [['a', '10.4'], ['b', '10.4'], ['c', '10.2']], '31', [11, 10, 10]],
    ['ties go to the earlier line', [['a', '0.5'], ['b', '0.5']], '1', [1]],
    ['credits are negative items', [['Usage', '1000'], ['Commit applied', '-400.25']], '600', [1000, -400]],
    ['zero lines are left out', [['Free', '0'], ['Paid', '250']], '250', [250]],
    ['a total that disagrees with its lines: the difference lands on the largest line', [['a', '100'], ['b', '5']], '106', [101, 5]],
  ] as const)('%s', (_name, lines, total, amounts) => {
    const items = stripeItems(lines.map(([name, t]) => ({ name, total: t })), total);
    expect(items.map((i) => i.amount)).toEqual(amounts);
    expect(sum(items)).toBe(Number(total));
  });

  test('random lines always add up to the total and no line moves by a cent or more', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let run = 0; run < 500; run++) {
      const lines = Array.from({ length: 1 + Math.floor(rnd() * 8) }, (_, i) => ({ name: `l${i}`, total: (Math.floor(rnd() * 2_000_000) / 1000 - (rnd() < 0.1 ? 500 : 0)).toFixed(3) }));
      const total = roundAmount(lines.reduce((s, l) => s.plus(l.total), dec(0))).toFixed();
      const items = stripeItems(lines, total);
      expect(sum(items)).toBe(Number(total));
      for (const it of items) expect(Math.abs(it.amount - Number(lines[it.index]!.total))).toBeLessThan(1);
    }
  });

  test('quantities show in the description', () => {
    expect(stripeItems([{ name: 'API calls', total: '500', quantity: '1000' }], '500')).toEqual([{ index: 0, description: 'API calls (1000)', amount: 500 }]);
  });
});
