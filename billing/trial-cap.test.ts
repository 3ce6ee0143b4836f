import { isInTrialCharge, trialCapUsage } from './trial-cap.js';
import { trialLineName, trialWindow } from './trial.js';

describe('trialCapUsage: how much of the spending cap the in-trial charges use', () => {
  test.each([
    // name, cap (cents) or none, in-trial charges so far, used, remaining, used up
    ['no cap: everything is covered, never used up', undefined, '123456', '123456', null, false],
    ['no cap, nothing yet', undefined, '0', '0', null, false],
    ['under the cap', '5000', '4999', '4999', '1', false],
    ['exactly the cap: used up (any more is billed)', '5000', '5000', '5000', '0', true],
    ['beyond the cap: covered up to it', '5000', '7250', '5000', '0', true],
    ['zero usage', '5000', '0', '0', '5000', false],
    ['a zero cap covers nothing and is used up at once', '0', '0', '0', '0', true],
    ['charges net negative (a correction): nothing covered', '5000', '-40', '0', '5000', false],
  ] as [string, string | undefined, string, string, string | null, boolean][])('%s', (_name, cap, charges, used, remaining, usedUp) => {
    const u = trialCapUsage({ spending_cap: cap === undefined ? undefined : { amount: cap } }, charges);
    expect([u.cap?.toString() ?? null, u.used.toString(), u.remaining?.toString() ?? null, u.usedUp]).toEqual([cap ?? null, used, remaining, usedUp]);
  });

  test('a negative cap is refused, naming the field', () => {
    expect(() => trialCapUsage({ spending_cap: { amount: '-1' } }, '0')).toThrow(/spending_cap\.amount/);
  });
});

describe('isInTrialCharge', () => {
  const w = trialWindow('2026-01-10T00:00:00Z', { length_in_days: 14 }); // [Jan 10, Jan 24)
  test.each([
    ['usage inside', { type: 'usage', startingAt: '2026-01-10T00:00:00.000Z', endingBefore: '2026-01-24T00:00:00.000Z' }, true],
    ['usage after the trial', { type: 'usage', startingAt: '2026-01-24T00:00:00.000Z', endingBefore: '2026-02-01T00:00:00.000Z' }, false],
    ['usage across the end (never produced: the invoice cuts there)', { type: 'usage', startingAt: '2026-01-10T00:00:00.000Z', endingBefore: '2026-02-01T00:00:00.000Z' }, false],
    ['a subscription inside', { type: 'subscription', startingAt: '2026-01-12T00:00:00.000Z', endingBefore: '2026-01-24T00:00:00.000Z' }, true],
    ['a scheduled charge dated in it', { type: 'scheduled', startingAt: '2026-01-23T23:00:00.000Z', endingBefore: '2026-01-23T23:00:00.000Z' }, true],
    ['a scheduled charge at the end instant', { type: 'scheduled', startingAt: '2026-01-24T00:00:00.000Z', endingBefore: '2026-01-24T00:00:00.000Z' }, false],
    ['a discount dated in it', { type: 'scheduled', startingAt: '2026-01-12T00:00:00.000Z', endingBefore: '2026-01-12T00:00:00.000Z', discountId: 'd' }, false],
    ['a commit purchase dated in it', { type: 'commit_purchase', startingAt: '2026-01-12T00:00:00.000Z', endingBefore: '2026-01-12T00:00:00.000Z' }, false],
    ['a correction', { type: 'correction' }, false],
  ] as const)('%s', (_name, line, expected) => {
    expect(isInTrialCharge(line, w)).toBe(expected);
  });

  test('the line name is the trial end', () => {
    expect(trialLineName(w)).toBe('Trial (ends 2026-01-24)');
  });
});
