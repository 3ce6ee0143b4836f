import type Metronome from '@metronome/sdk';
import { rechargeWorkflowId } from '../workflows/search-attributes.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, monthStart, uniqueName } from './stack.js';
import { stripeCustomer, stripeEnv, stripeHeld, stripeHold, stripeRelease, testStripe } from './stripe/fixtures.js';

/**
 * Two attempts of one recharge's charge overlapping at Stripe: attempt 1's `pay` is held inside
 * the Stripe-protocol server (slow Stripe) until the client gives up on it and Temporal starts
 * attempt 2, whose `pay` with the same idempotency key gets Stripe's 409 `idempotency_key_in_use`.
 * That 409 is "try again later", not a refusal: the recharge is never marked FAILED, and once the
 * held charge goes through, a later attempt gets its answer and the commit is granted — one
 * charge, one commit. This Accrue has a Stripe key of its own, so the hold touches no other test.
 */
describe('a recharge charged by two overlapping attempts', () => {
  const appKey = `sk_test_${uniqueName('overlap')}`;
  const h = useSdkApp('rechargeoverlap', { env: stripeEnv({ STRIPE_SECRET_KEY: appKey }) });
  const stripe = testStripe();

  test('attempt 2 meets attempt 1 still inside Stripe: retried, never FAILED, charged and granted once', async () => {
    const metric = await h.client.v1.billableMetrics.create({ name: uniqueName('calls'), aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await h.client.v1.contracts.products.create({ name: uniqueName('Calls'), type: 'USAGE', billable_metric_id: metric.data.id });
    const credits = await h.client.v1.contracts.products.create({ name: uniqueName('Credits'), type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: uniqueName('card') });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: calls.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: monthStart(-1) });
    const alias = uniqueName('overlap');
    const customer = await h.client.v1.customers.create({ name: 'Slow Stripe Co', ingest_aliases: [alias] } as Metronome.V1.CustomerCreateParams);
    const stripeCustomerId = await stripeCustomer(stripe, 'pays');
    await h.client.v1.customers.billingConfig.create({ customer_id: customer.data.id, billing_provider_type: 'stripe', billing_provider_customer_id: stripeCustomerId });
    const contract = await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(0),
      commits: [{ type: 'PREPAID', product_id: credits.data.id, access_schedule: { schedule_items: [{ amount: 1000, starting_at: monthStart(0), ending_before: monthStart(12) }] } }],
      prepaid_balance_threshold_configuration: { commit: { product_id: credits.data.id }, is_enabled: true, payment_gate_config: { payment_gate_type: 'STRIPE' }, threshold_amount: 500, recharge_to_amount: 2000 },
    } as unknown as Metronome.V1.ContractCreateParams);
    const recharge = async () => h.orm.em.fork().execute<{ status: string; failure: string | null }[]>('select status, failure from recharge where contract_id = ?', [contract.data.id]);

    await stripeHold(appKey, 'POST /v1/invoices/{id}/pay');
    try {
      await h.client.v1.usage.ingest({ usage: Array.from({ length: 6 }, (_, i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'call', timestamp: new Date(Date.now() - 1000).toISOString() })) });
      await eventually('attempt 1 held inside Stripe', async () => expect(await stripeHeld(appKey)).toBe(1), 60_000);
      // Attempt 1 times out at the client; Temporal starts attempt 2, which meets the held request.
      const handle = h.temporal.workflow.getHandle(rechargeWorkflowId(contract.data.id, 1));
      await eventually('attempt 2 answered 409 and another attempt is scheduled (or the recharge failed)', async () => {
        const rows = await recharge();
        if (rows[0]?.status === 'FAILED') return;
        const pending = (await handle.describe()).raw.pendingActivities ?? [];
        const charge = pending.find((a) => a.activityType?.name === 'chargeRecharge');
        expect(charge?.attempt ?? 0).toBeGreaterThanOrEqual(3);
        expect(charge?.lastFailure?.message).toMatch(/idempotency_key_in_use/);
      }, 90_000);
      expect(await stripeHeld(appKey)).toBe(1); // attempt 1's charge is still in progress at Stripe
      expect(await recharge()).toEqual([{ status: 'PENDING', failure: null }]);
    } finally {
      await stripeRelease(appKey);
    }
    await eventually('granted once the held charge went through', async () => expect(await recharge()).toEqual([{ status: 'GRANTED', failure: null }]), 90_000);
    expect((await stripe.invoices.list({ customer: stripeCustomerId })).data.map((i) => [i.total, i.status])).toEqual([[1600, 'paid']]);
    expect((await stripe.charges.list({ customer: stripeCustomerId })).data).toHaveLength(1);
    expect(await h.orm.em.fork().execute(`select count(*)::int as n from balance_grant where contract_id = ? and custom_fields ->> 'accrue_recharge' = '1'`, [contract.data.id])).toEqual([{ n: 1 }]);
    expect((await h.orm.em.fork().execute<{ properties: { payment_status: string } }[]>(
      `select properties from outbound_event where type = 'payment_gate.payment_status' and customer_id = ?`, [customer.data.id])).map((r) => r.properties.payment_status)).toEqual(['paid']);
  });
});
