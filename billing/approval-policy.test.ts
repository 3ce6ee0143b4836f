import { changePercent, decideApproval, parseApprovalPolicyEnv, policyApprover, type ApprovalPolicy } from './approval-policy.js';

/** When a closing invoice waits for finance: one pure decision, table-driven, exact decimals. */
const ALWAYS: ApprovalPolicy = { mode: 'ALWAYS' };
const NEVER: ApprovalPolicy = { mode: 'NEVER' };
const above = (amount: string): ApprovalPolicy => ({ mode: 'ABOVE', amount });

describe('decideApproval', () => {
  test.each<[string, Parameters<typeof decideApproval>[0], boolean, string, string | undefined]>([
    // policy alone
    ['ALWAYS waits, whatever the total', { defaultPolicy: ALWAYS, total: '0' }, true, 'policy:ALWAYS', undefined],
    ['NEVER lets it through', { defaultPolicy: NEVER, total: '99999999' }, false, 'policy:NEVER', undefined],
    ['ABOVE: a total above the amount waits', { defaultPolicy: above('50000'), total: '50001' }, true, 'policy:ABOVE:above', undefined],
    ['ABOVE: exactly the amount is not above it', { defaultPolicy: above('50000'), total: '50000' }, false, 'policy:ABOVE:not-above', undefined],
    ['ABOVE: a fraction of a cent over counts (no float)', { defaultPolicy: above('50000.005'), total: '50000.01' }, true, 'policy:ABOVE:above', undefined],
    ['ABOVE: a negative total (credits) is below any amount', { defaultPolicy: above('0'), total: '-5' }, false, 'policy:ABOVE:not-above', undefined],
    // the contract's own policy wins over the default
    ['contract NEVER over default ALWAYS', { contractPolicy: NEVER, defaultPolicy: ALWAYS, total: '10' }, false, 'policy:NEVER', undefined],
    ['contract ALWAYS over default NEVER', { contractPolicy: ALWAYS, defaultPolicy: NEVER, total: '10' }, true, 'policy:ALWAYS', undefined],
    ['contract ABOVE over default NEVER', { contractPolicy: above('100'), defaultPolicy: NEVER, total: '101' }, true, 'policy:ABOVE:above', undefined],
    // change from the previous period (ACCRUE_APPROVAL_CHANGE_PCT)
    ['NEVER, change 50 % > 25 % waits', { defaultPolicy: NEVER, total: '150', previousTotal: '100', changePct: '25' }, true, 'change:above-threshold', '50.00'],
    ['NEVER, a drop of 30 % > 25 % waits too', { defaultPolicy: NEVER, total: '70', previousTotal: '100', changePct: '25' }, true, 'change:above-threshold', '-30.00'],
    ['NEVER, a drop of exactly 25 % passes', { defaultPolicy: NEVER, total: '75', previousTotal: '100', changePct: '25' }, false, 'policy:NEVER', '-25.00'],
    ['NEVER, exactly 25 % is not more than 25 %', { defaultPolicy: NEVER, total: '125', previousTotal: '100', changePct: '25' }, false, 'policy:NEVER', '25.00'],
    ['NEVER, 12.51 % > 12.5 %', { defaultPolicy: NEVER, total: '11251', previousTotal: '10000', changePct: '12.5' }, true, 'change:above-threshold', '12.51'],
    ['NEVER, no threshold set: any change passes', { defaultPolicy: NEVER, total: '1000', previousTotal: '1' }, false, 'policy:NEVER', '99900.00'],
    ['NEVER, no previous period: nothing to compare', { defaultPolicy: NEVER, total: '1000', changePct: '10' }, false, 'policy:NEVER', undefined],
    ['NEVER, from 0 to anything waits', { defaultPolicy: NEVER, total: '1', previousTotal: '0', changePct: '10' }, true, 'change:from-zero', undefined],
    ['NEVER, 0 to 0 is no change', { defaultPolicy: NEVER, total: '0', previousTotal: '0', changePct: '0' }, false, 'policy:NEVER', undefined],
    ['ABOVE not above, but changed too much', { defaultPolicy: above('50000'), total: '300', previousTotal: '100', changePct: '100' }, true, 'change:above-threshold', '200.00'],
    ['ALWAYS reports the change as well', { defaultPolicy: ALWAYS, total: '300', previousTotal: '100', changePct: '1000' }, true, 'policy:ALWAYS', '200.00'],
  ])('%s', (_name, input, required, reason, pct) => {
    const d = decideApproval(input);
    expect([d.approvalRequired, d.reason, d.changePercent]).toEqual([required, reason, pct]);
    expect(d.previousTotal).toBe(input.previousTotal);
  });

  test('the approver recorded for an invoice the policy let through names the policy', () => {
    expect(policyApprover(decideApproval({ defaultPolicy: NEVER, total: '1' }))).toBe('policy:NEVER');
    expect(policyApprover(decideApproval({ defaultPolicy: above('5'), total: '1' }))).toBe('policy:ABOVE');
  });

  test('ABOVE without an amount is a defect in stored terms, named', () => {
    expect(() => decideApproval({ defaultPolicy: { mode: 'ABOVE' }, total: '1' })).toThrow(/approval_policy.amount/);
  });
});

describe('changePercent', () => {
  test.each([
    ['100', '100', '0.00'], ['1', '3', '-66.67'], ['2', '3', '-33.33'], ['4', '3', '33.33'], ['5', '3', '66.67'], ['-50', '100', '-150.00'], ['100', '-100', '200.00'],
    ['100000000000000000001', '100000000000000000000', '0.00'],
  ])('%s from %s is %s %%', (total, prev, pct) => {
    expect(changePercent(total, prev)).toBe(pct);
  });
  test('undefined from 0', () => expect(changePercent('5', '0')).toBeUndefined());
});

describe('ACCRUE_APPROVAL_POLICY', () => {
  test.each([
    [undefined, { mode: 'ALWAYS' }], ['NEVER', { mode: 'NEVER' }], ['ABOVE:50000', { mode: 'ABOVE', amount: '50000' }], [' ABOVE:0.5 ', { mode: 'ABOVE', amount: '0.5' }],
  ])('%s', (env, policy) => expect(parseApprovalPolicyEnv(env)).toEqual(policy));
  test.each(['SOMETIMES', 'ABOVE', 'ABOVE:', 'ABOVE:-1', 'ABOVE:abc', 'always'])('%s is refused, naming the setting', (env) => {
    expect(() => parseApprovalPolicyEnv(env)).toThrow(/ACCRUE_APPROVAL_POLICY/);
  });
});
