import { paymentStanding } from './payments.js';

describe('paymentStanding', () => {
  const finalizedAt = '2026-01-31T00:00:00.000Z';
  test.each([
    // status, total, paid, terms → payment status, due, due date
    ['FINALIZED', '30000', '0', undefined, 'UNPAID', '30000', '2026-03-02T00:00:00.000Z'],
    ['FINALIZED', '30000', '10000', 10, 'PARTIALLY_PAID', '20000', '2026-02-10T00:00:00.000Z'],
    ['FINALIZED', '30000', '30000', 0, 'PAID', '0', '2026-01-31T00:00:00.000Z'],
    ['FINALIZED', '0', '0', undefined, 'PAID', '0', '2026-03-02T00:00:00.000Z'],
    ['FINALIZED', '-500', '0', undefined, 'PAID', '0', '2026-03-02T00:00:00.000Z'],
    ['VOID', '30000', '0', undefined, 'UNPAID', '0', null],
    ['VOID', '30000', '30000', undefined, 'PAID', '0', null],
  ] as const)('%s total %s paid %s terms %s → %s, due %s by %s', (status, total, paid, terms, expStatus, expDue, expDueAt) => {
    const s = paymentStanding({ status, total, paid, finalizedAt, netPaymentTermsDays: terms });
    expect(s).toEqual({ status: expStatus, paid: expect.any(String), amountDue: expDue, dueAt: expDueAt });
  });

  test('a dunning that ran out makes the invoice due then, unless its terms were earlier', () => {
    const base = { status: 'FINALIZED', total: '30000', paid: '0', finalizedAt } as const;
    expect(paymentStanding({ ...base, dunningExhaustedAt: '2026-02-16T08:00:00Z' }).dueAt).toBe('2026-02-16T08:00:00.000Z');
    expect(paymentStanding({ ...base, netPaymentTermsDays: 7, dunningExhaustedAt: '2026-02-16T08:00:00Z' }).dueAt).toBe('2026-02-07T00:00:00.000Z');
    expect(paymentStanding({ ...base, dunningExhaustedAt: null }).dueAt).toBe('2026-03-02T00:00:00.000Z');
  });
});
