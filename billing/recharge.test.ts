import { rechargeStep, spendThresholdStep } from './recharge.js';

describe('rechargeStep: when a prepaid balance is recharged, and by how much', () => {
  const cfg = { is_enabled: true, threshold_amount: '500', recharge_to_amount: '2000' };
  test.each([
    // previous status, balance → status, recharge amount
    [undefined, '1000', 'ok', undefined],
    ['ok', '500', 'recharging', '1500'], // at the threshold counts
    ['ok', '499.4', 'recharging', '1501'], // fractions round up to whole cents
    ['ok', '-20', 'recharging', '2020'], // overdrawn: back to the recharge-to amount
    ['recharging', '100', 'recharging', undefined], // one recharge at a time
    ['recharging', '2000', 'recharging', undefined], // only the recharge itself ends it
    ['failed', '100', 'failed', undefined], // a failed payment is not retried in a loop
    ['failed', '600', 'ok', undefined], // above the threshold again: watching
  ] as const)('%s at %s → %s %s', (prev, balance, status, recharge) => {
    expect(rechargeStep(prev, balance, cfg)).toEqual({ status, ...(recharge ? { recharge } : {}) });
  });

  test('disabled: nothing happens, whatever the balance', () => {
    expect(rechargeStep('ok', '0', { ...cfg, is_enabled: false })).toEqual({ status: 'ok' });
    expect(rechargeStep('failed', '0', { ...cfg, is_enabled: false })).toEqual({ status: 'failed' });
  });

  test.each([
    [undefined, '499', 'ok', undefined],
    ['ok', '500', 'recharging', '500'], // reaching the threshold bills the threshold amount
    ['ok', '1700', 'recharging', '500'], // one threshold at a time
    ['recharging', '900', 'recharging', undefined],
    ['failed', '800', 'failed', undefined],
    ['failed', '100', 'ok', undefined],
  ] as const)('spend threshold: %s owing %s → %s %s', (prev, owed, status, recharge) => {
    expect(spendThresholdStep(prev, owed, { is_enabled: true, threshold_amount: '500' })).toEqual({ status, ...(recharge ? { recharge } : {}) });
  });
});
