import { entitlements, type ContractAccess } from './entitlements.js';

const contract = (over: Partial<ContractAccess>): ContractAccess => ({ contractId: 'c1', state: 'ACTIVE', endedByTrial: false, gatesArrears: false, trialCapReached: false, productIds: ['p1'], ...over });

describe('entitlements: who may use what, now', () => {
  test.each([
    [{}, true, 'ACTIVE'],
    [{ state: 'TRIAL' as const }, true, 'TRIAL'],
    [{ state: 'RENEWING' as const }, true, 'RENEWING'],
    [{ state: 'ENDED' as const }, false, 'contract_ended'],
    [{ state: 'ENDED' as const, endedByTrial: true }, false, 'trial_expired'],
    [{ state: 'ARCHIVED' as const }, false, 'contract_archived'],
    [{ state: 'ARREARS' as const }, true, 'ARREARS'],
    [{ state: 'ARREARS' as const, gatesArrears: true }, false, 'arrears'],
    [{ state: 'TRIAL' as const, trialCapReached: true }, false, 'trial_spending_cap_reached'],
    [{ state: 'ACTIVE' as const, trialCapReached: true }, true, 'ACTIVE'],
  ])('%j → entitled %s (%s)', (over, entitled, reason) => {
    expect(entitlements([contract(over)], [])).toEqual([{ productId: 'p1', entitled, reason }]);
  });

  test('a gating alert in alarm gates its products, or all without products', () => {
    const c = contract({ productIds: ['p1', 'p2'] });
    expect(entitlements([c], [{ alertId: 'a', name: 'spend 150%', productIds: ['p2'] }]).map((e) => [e.productId, e.entitled, e.reason]))
      .toEqual([['p1', true, 'ACTIVE'], ['p2', false, 'alert_in_alarm: spend 150%']]);
    expect(entitlements([c], [{ alertId: 'a', name: 'all', productIds: null }]).every((e) => !e.entitled)).toBe(true);
  });

  test('any contract that grants a product entitles it; otherwise the first gate is the reason', () => {
    const ended = contract({ contractId: 'old', state: 'ENDED', productIds: ['p1', 'p2'] });
    const live = contract({ contractId: 'new', productIds: ['p2'] });
    expect(entitlements([ended, live], [])).toEqual([
      { productId: 'p1', entitled: false, reason: 'contract_ended' },
      { productId: 'p2', entitled: true, reason: 'ACTIVE' },
    ]);
    expect(entitlements([], [])).toEqual([]);
  });
});
