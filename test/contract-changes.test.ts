import pg from 'pg';
import Metronome from '@metronome/sdk';
import { contractStateQuery } from '../workflows/contract.js';
import { freePort } from '../stack/net.js';
import { useSdkApp } from './sdk-app.js';
import { eventually, http, monthStart, startApp, uniqueName } from './stack.js';

/**
 * Changing a running contract through @metronome/sdk: a backdated amendment re-rates the open
 * period (the frozen one stays as frozen), the end date moves and the contract workflow re-plans,
 * a v2 edit adds a credit, v2 get/list show the contract, and archiving ends the workflow and
 * cancels the invoice waiting for approval.
 */
describe('contract changes: amend, end date, edit, archive', () => {
  const h = useSdkApp('changes');

  test('amend re-rates open periods, end date re-plans the workflow, archive ends it', async () => {
    const prev = monthStart(-1);
    const cur = monthStart(0);
    const at = (base: string, hours: number) => new Date(Date.parse(base) + hours * 3_600_000).toISOString();
    const alias = uniqueName('chg');
    const customer = await h.client.v1.customers.create({ name: 'Changing Co', ingest_aliases: [alias] });
    const metric = await h.client.v1.billableMetrics.create({ name: 'calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['call'] } });
    const calls = await h.client.v1.contracts.products.create({ name: 'Calls', type: 'USAGE', billable_metric_id: metric.data.id });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Credits', type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'card' });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: calls.data.id, entitled: true, rate_type: 'FLAT', price: 10, starting_at: prev });
    await h.client.v1.usage.ingest({ usage: [0, 1, 2].map((i) => ({ transaction_id: `${alias}-p${i}`, customer_id: alias, event_type: 'call', timestamp: at(prev, i + 1) })) });
    await h.client.v1.usage.ingest({ usage: [0, 1].map((i) => ({ transaction_id: `${alias}-c${i}`, customer_id: alias, event_type: 'call', timestamp: at(cur, 0.1 + i * 0.01) })) });
    const contract = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: prev });
    const ids = { customer_id: customer.data.id, contract_id: contract.data.id };

    const list = async () => (await h.client.v1.customers.invoices.list({ customer_id: customer.data.id })).data;
    const [frozenPrev, draftCur] = await eventually('last month frozen, this month drafted with usage', async () => {
      const invs = await list();
      if ((invs[0] as unknown as { approval_status: string })?.approval_status !== 'PENDING_APPROVAL' || invs[1]?.total !== 20) throw new Error(JSON.stringify(invs.map((i) => [i.status, i.total])));
      return invs as [Metronome.V1.Customers.Invoice, Metronome.V1.Customers.Invoice];
    });
    expect([frozenPrev.total, draftCur.total]).toEqual([30, 20]);

    // A backdated amendment (from last month): half price. The open draft is re-rated at once;
    // the frozen invoice keeps what it was frozen with.
    const amendment = await h.client.v1.contracts.amend({ ...ids, starting_at: prev, overrides: [{ starting_at: prev, type: 'MULTIPLIER', multiplier: 0.5, product_id: calls.data.id }] });
    const after = await list();
    expect(after.map((i) => i.total)).toEqual([30, 10]);
    const got = await h.client.v1.contracts.retrieve(ids);
    expect([got.data.initial.overrides.length, got.data.current.overrides.length, got.data.amendments.map((a) => [a.id, a.overrides.length])]).toEqual([0, 1, [[amendment.data.id, 1]]]);

    // The end date moves to two days from now: this month's period ends there (or at the month's
    // end, if sooner) and the workflow re-plans.
    const end = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 48 * 3_600_000).toISOString();
    const periodEnd = new Date(Math.min(Date.parse(end), Date.parse(monthStart(1)))).toISOString();
    await h.client.v1.contracts.updateEndDate({ ...ids, ending_before: end });
    expect((await list())[1]!.end_timestamp).toBe(periodEnd);
    const handle = h.temporal.workflow.getHandle(`contract/${contract.data.id}`);
    await eventually('the workflow to re-plan', async () => {
      const state = await handle.query(contractStateQuery);
      if (state.nextCloseAt !== new Date(Date.parse(periodEnd) + 1000).toISOString()) throw new Error(JSON.stringify(state));
    });
    await expect(h.client.v1.contracts.updateEndDate({ ...ids, ending_before: at(prev, -5) })).rejects.toThrow(/ending_before/);

    // A v2 edit adds a credit: the open draft draws it.
    const edit = await h.client.v2.contracts.edit({ ...ids, add_credits: [{ product_id: fixed.data.id, priority: 1, access_schedule: { schedule_items: [{ amount: 4, starting_at: cur, ending_before: end }] } }] } as Metronome.V2.ContractEditParams);
    expect(edit.data.id).toBe(contract.data.id);
    expect((await list())[1]!.total).toBe(6);
    const v2 = await h.client.v2.contracts.retrieve(ids);
    expect([v2.data.id, v2.data.ending_before, v2.data.credits?.length, v2.data.overrides.length]).toEqual([contract.data.id, end, 1, 1]);
    expect((await h.client.v2.contracts.list({ customer_id: customer.data.id })).data.map((c) => c.id)).toEqual([contract.data.id]);

    // Archive: the invoice waiting for approval is cancelled (VOID), the workflow ends.
    await h.client.v1.contracts.archive({ ...ids, void_invoices: false });
    await eventually('the contract workflow to end', async () => {
      const d = await handle.describe();
      if (d.status.name !== 'COMPLETED') throw new Error(d.status.name);
    });
    expect((await handle.query(contractStateQuery)).state).toBe('ARCHIVED');
    const prevAfter = await h.client.v1.customers.invoices.retrieve({ customer_id: customer.data.id, invoice_id: frozenPrev.id });
    expect(prevAfter.data.status).toBe('VOID');
    expect((await h.client.v1.contracts.list({ customer_id: customer.data.id })).data).toEqual([]);
    expect((await h.client.v1.contracts.list({ customer_id: customer.data.id, include_archived: true })).data.map((c) => [c.id, !!c.archived_at])).toEqual([[contract.data.id, true]]);
    expect((await http(h.app, 'POST', '/v1/contracts/amend', { token: h.app.adminToken, body: { ...ids, starting_at: cur } })).status).toBe(409);
  });

  test('a renewal rolls half of what is left of a commit over to the new contract', async () => {
    const p0 = monthStart(-2);
    const p1 = monthStart(-1);
    const at = (base: string, hours: number) => new Date(Date.parse(base) + hours * 3_600_000).toISOString();
    const alias = uniqueName('roll');
    const customer = await h.client.v1.customers.create({ name: 'Renewing Co', ingest_aliases: [alias] });
    const metric = await h.client.v1.billableMetrics.create({ name: 'jobs', aggregation_type: 'COUNT', event_type_filter: { in_values: ['job'] } });
    const jobs = await h.client.v1.contracts.products.create({ name: 'Jobs', type: 'USAGE', billable_metric_id: metric.data.id });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Commit', type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'card' });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card.data.id, product_id: jobs.data.id, entitled: true, rate_type: 'FLAT', price: 100, starting_at: p0 });
    await h.client.v1.usage.ingest({ usage: [0, 1, 2].map((i) => ({ transaction_id: `${alias}-${i}`, customer_id: alias, event_type: 'job', timestamp: at(p0, i + 1) })) });
    const old = await h.client.v1.contracts.create({
      customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p0, ending_before: p1,
      commits: [
        { type: 'PREPAID', name: 'Annual commit', product_id: fixed.data.id, priority: 1, rollover_fraction: 0.5, access_schedule: { schedule_items: [{ amount: 1000, starting_at: p0, ending_before: p1 }] } },
        // A minimum: what usage does not reach by the end is trued up on the last invoice.
        { type: 'POSTPAID', name: 'Minimum', product_id: fixed.data.id, priority: 2, access_schedule: { schedule_items: [{ amount: 5000, starting_at: p0, ending_before: p1 }] }, invoice_schedule: { schedule_items: [{ timestamp: p1, amount: 5000 }] } },
      ],
    });
    // SUPERSEDE needs a start inside the old contract; a RENEWAL must start when it ends. Meanwhile
    // a transaction writing a row that references the old contract (as its workflow's lifecycle
    // record does) holds a KEY SHARE lock on it: the create waits for it instead of skipping the
    // row as not found (it did, with FOR UPDATE SKIP LOCKED, and answered 404).
    const blocker = new pg.Client({ connectionString: h.dbUrl });
    await blocker.connect();
    await blocker.query('begin');
    await blocker.query('select 1 from contract where id = $1 for key share', [old.data.id]);
    const badStartPending = http(h.app, 'POST', '/v1/contracts/create', { token: h.app.adminToken, body: { customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: at(p1, 24), transition: { from_contract_id: old.data.id, type: 'RENEWAL' } } });
    await new Promise((r) => setTimeout(r, 500));
    await blocker.query('commit');
    await blocker.end();
    const badStart = await badStartPending;
    expect([badStart.status, badStart.json.field]).toEqual([400, 'starting_at']);
    const renewal = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p1, transition: { from_contract_id: old.data.id, type: 'RENEWAL' } });

    // The rollover waits for the old contract's last invoice to be final: none while it is pending.
    const pending = await eventually('the old contract\'s last invoice frozen', async () => {
      const [inv] = (await h.client.v1.customers.invoices.list({ customer_id: customer.data.id, contract_id: old.data.id })).data;
      if ((inv as unknown as { approval_status?: string } | undefined)?.approval_status !== 'PENDING_APPROVAL') throw new Error('not frozen yet');
      return inv!;
    });
    const oldWorkflow = h.temporal.workflow.getHandle(`contract/${old.data.id}`);
    await eventually('the old contract\'s workflow waiting for its last invoice', async () => {
      const st = await oldWorkflow.query(contractStateQuery);
      if (st.unclosedPeriods.length !== 1) throw new Error(JSON.stringify(st));
    });
    const beforeApproval = await h.client.v1.contracts.listBalances({ customer_id: customer.data.id, include_contract_balances: true });
    expect(beforeApproval.data.some((b) => (b as { rolled_over_from?: unknown }).rolled_over_from)).toBe(false);
    expect((await oldWorkflow.describe()).status.name).toBe('RUNNING');
    expect((await http(h.app, 'POST', `/v1/invoices/${pending.id}/approve`, { token: h.app.adminToken, body: { total: pending.total } })).status).toBe(200);

    // Used 300 of 1000 by the end: half of the 700 left, 350, rolls over; the rest expires.
    const balances = await eventually('the rollover', async () => {
      const list = await h.client.v1.contracts.listBalances({ customer_id: customer.data.id, include_contract_balances: true, include_ledgers: true });
      if (list.data.length !== 3 || !list.data.some((b) => (b as { rolled_over_from?: unknown }).rolled_over_from)) throw new Error(`${list.data.length} commits`);
      return list.data;
    });
    const oldCommit = balances.find((b) => (b as { contract?: { id: string } }).contract?.id === old.data.id && b.type === 'PREPAID')!;
    const minimum = balances.find((b) => b.type === 'POSTPAID')!;
    expect((minimum.ledger as { type: string; amount: number }[]).map((e) => [e.type, e.amount])).toEqual([['POSTPAID_COMMIT_INITIAL_BALANCE', 5000], ['POSTPAID_COMMIT_TRUEUP', -5000]]);
    const [oldInvoice] = (await h.client.v1.customers.invoices.list({ customer_id: customer.data.id, contract_id: old.data.id })).data;
    expect((oldInvoice!.line_items as { type: string; name: string; total: number }[]).map((l) => [l.type, l.name, l.total])).toEqual([
      ['usage', 'Jobs', 300], ['applied_commit_or_credit', 'Annual commit', -300], ['postpaid_trueup', 'Minimum (true-up)', 5000],
    ]);
    const newCommit = balances.find((b) => (b as { contract?: { id: string } }).contract?.id === renewal.data.id)!;
    expect((oldCommit.ledger as { type: string; amount: number }[]).map((e) => [e.type, e.amount])).toEqual([
      ['PREPAID_COMMIT_SEGMENT_START', 1000], ['PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION', -300], ['PREPAID_COMMIT_ROLLOVER', -350], ['PREPAID_COMMIT_EXPIRATION', -350],
    ]);
    expect([newCommit.access_schedule?.schedule_items.map((s) => [s.amount, s.starting_at]), (newCommit as { rolled_over_from?: unknown }).rolled_over_from]).toEqual([[[350, p1]], { commit_id: oldCommit.id, contract_id: old.data.id }]);
    const got = await h.client.v1.contracts.retrieve({ customer_id: customer.data.id, contract_id: renewal.data.id });
    expect(got.data.current.transitions).toEqual([{ from_contract_id: old.data.id, to_contract_id: renewal.data.id, type: 'RENEWAL' }]);
    // A second transition from the same contract is refused.
    const again = await http(h.app, 'POST', '/v1/contracts/create', { token: h.app.adminToken, body: { customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: p1, transition: { from_contract_id: old.data.id, type: 'RENEWAL' } } });
    expect(again.status).toBe(409);
  });

  test('a v2 edit is answered 2xx once committed, even while Temporal is unreachable, and is idempotent on uniqueness_key', async () => {
    // Monthly periods from the contract's start, 15 days ago: the open period ends in two weeks or
    // so, so an end date in two days re-plans its close (whatever the day of the month).
    const prev = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000 - 15 * 86_400_000).toISOString();
    const customer = await h.client.v1.customers.create({ name: 'Editing Co' });
    const fixed = await h.client.v1.contracts.products.create({ name: 'Edit commit', type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'card' });
    const contract = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: prev, usage_statement_schedule: { frequency: 'MONTHLY', day: 'CONTRACT_START' } });
    const ids = { customer_id: customer.data.id, contract_id: contract.data.id };
    const commitNames = async () => (await h.client.v2.contracts.retrieve(ids)).data.commits.map((c) => c.name).sort();
    const end = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000 + 48 * 3_600_000).toISOString();
    const handle = h.temporal.workflow.getHandle(`contract/${contract.data.id}`);
    // Before the edit the workflow waits for the period's own end, well after the new end date.
    await eventually('the workflow planning its first close', async () => {
      const state = await handle.query(contractStateQuery);
      if (!state.nextCloseAt || Date.parse(state.nextCloseAt) < Date.parse(end) + 7 * 86_400_000) throw new Error(JSON.stringify(state));
    });
    const commit = (name: string) => ({ type: 'PREPAID' as const, name, product_id: fixed.data.id, access_schedule: { schedule_items: [{ amount: 100, starting_at: prev, ending_before: end }] } });

    // An API process whose Temporal is down (nothing listens there), on the same database and task
    // queue; the SDK client retries 5xx answers twice, as by default.
    const down = await startApp({ databaseUrl: h.dbUrl, withWorker: false, temporalAddress: `127.0.0.1:${await freePort()}`, env: { ACCRUE_TASK_QUEUE: h.app.taskQueue } });
    try {
      const client = new Metronome({ bearerToken: down.adminToken, baseURL: down.baseURL, maxRetries: 2 });
      // Commits and a new end date: committed, so answered 2xx (a 503 made the SDK add the commit three times).
      const first = await client.v2.contracts.edit({ ...ids, add_commits: [commit('no key')], update_contract_end_date: end });
      expect(first.data.id).toBe(contract.data.id);
      expect(await commitNames()).toEqual(['no key']);

      // The same request with a uniqueness key, three times: one edit, its id each time.
      const keyed = { ...ids, uniqueness_key: uniqueName('edit'), add_commits: [commit('keyed')], update_contract_end_date: end };
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push(await client.v2.contracts.edit(keyed));
      const editIds = answers.map((a) => (a.data as { edit?: { id: string } }).edit?.id);
      expect(editIds[0]).toEqual(expect.stringMatching(/^[0-9a-f-]{36}$/));
      expect(editIds).toEqual([editIds[0], editIds[0], editIds[0]]);
      expect(await commitNames()).toEqual(['keyed', 'no key']);
      // The key with another request: 409 naming it, nothing applied.
      const other = await http(down, 'POST', '/v2/contracts/edit', { token: down.adminToken, body: { ...keyed, add_commits: [commit('other')] } });
      expect([other.status, other.json.field]).toEqual([409, 'uniqueness_key']);
      expect(await commitNames()).toEqual(['keyed', 'no key']);
    } finally {
      await down.stop();
    }
    // The workflow was not told by that API; the outbound loop tells it from the queue.
    await eventually('the workflow to re-plan to the new end date', async () => {
      const state = await handle.query(contractStateQuery);
      if (state.nextCloseAt !== new Date(Date.parse(end) + 1000).toISOString()) throw new Error(JSON.stringify(state));
    });
    await eventually('the queued tell cleared', async () => {
      const rows = await h.orm.em.fork().execute('select 1 from contract_tell where contract_id = ?', [contract.data.id]);
      if (rows.length) throw new Error('still queued');
    });

    // Concurrent retries of one keyed edit, both past the first look-up and then waiting on the
    // contract's row lock: one applies, the other answers its id.
    const blocker = new pg.Client({ connectionString: h.dbUrl });
    await blocker.connect();
    await blocker.query('begin');
    await blocker.query('select 1 from contract where id = $1 for update', [contract.data.id]);
    const raced = { ...ids, uniqueness_key: uniqueName('race'), add_commits: [commit('raced')] };
    const pending = [0, 1].map(() => http(h.app, 'POST', '/v2/contracts/edit', { token: h.app.adminToken, body: raced }));
    await eventually('both edits waiting on the contract\'s lock', async () => {
      // Another session than the blocker's: pg_stat_activity is one snapshot per transaction.
      const rows = await h.orm.em.fork().execute<{ n: number }[]>(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query ~* 'from "?contract"? .*for update'`);
      if (rows[0]!.n !== 2) throw new Error(`${rows[0]!.n} waiting`);
    });
    await blocker.query('commit');
    await blocker.end();
    const both = await Promise.all(pending);
    expect(both.map((r) => r.status)).toEqual([200, 200]);
    expect(both[0]!.json.data.edit.id).toBe(both[1]!.json.data.edit.id);
    expect(await commitNames()).toEqual(['keyed', 'no key', 'raced']);

    // A key is the account's: used on one contract, it is a 409 on another, which is left as it was.
    const otherContract = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: prev });
    const otherIds = { customer_id: customer.data.id, contract_id: otherContract.data.id };
    const reused = await http(h.app, 'POST', '/v2/contracts/edit', { token: h.app.adminToken, body: { ...raced, ...otherIds } });
    expect([reused.status, reused.json.field]).toEqual([409, 'uniqueness_key']);
    expect(reused.json.message).toContain(raced.uniqueness_key);
    expect((await h.client.v2.contracts.retrieve(otherIds)).data.commits).toEqual([]);
  });

  test('a transition create answered 503 while Temporal is unreachable leaves the old contract as it was', async () => {
    const prev = monthStart(-1);
    const customer = await h.client.v1.customers.create({ name: 'Superseding Co' });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'card' });
    const old = await h.client.v1.contracts.create({ customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: prev, ending_before: monthStart(3) });
    const stored = async () => (await h.orm.em.fork().execute<{ ending_before: string; tells: number }[]>(
      'select ending_before::text as ending_before, (select count(*)::int from contract_tell t where t.contract_id = c.id) as tells from contract c where id = ?', [old.data.id]))[0]!;
    const before = await stored();
    expect(before.tells).toBe(0);
    const down = await startApp({ databaseUrl: h.dbUrl, withWorker: false, temporalAddress: `127.0.0.1:${await freePort()}`, env: { ACCRUE_TASK_QUEUE: h.app.taskQueue } });
    try {
      const res = await http(down, 'POST', '/v1/contracts/create', { token: down.adminToken, body: { customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(1), transition: { from_contract_id: old.data.id, type: 'SUPERSEDE' } } });
      expect(res.status).toBe(503);
    } finally {
      await down.stop();
    }
    // Its end date is the one it had, and no tell is queued for the outbound loop to act on.
    const after = await stored();
    expect([after.ending_before, after.tells]).toEqual([before.ending_before, 0]);
    expect((await h.client.v1.contracts.retrieve({ customer_id: customer.data.id, contract_id: old.data.id })).data.current.ending_before).toBe(monthStart(3));
    // Nothing was stored: the same transition can be made once Temporal answers.
    const next = await http(h.app, 'POST', '/v1/contracts/create', { token: h.app.adminToken, body: { customer_id: customer.data.id, rate_card_id: card.data.id, starting_at: monthStart(1), transition: { from_contract_id: old.data.id, type: 'SUPERSEDE' } } });
    expect(next.status).toBe(200);
  });

  test('fields once dropped: v2 get as_of_date, invoice list type, credit type and pages, several customer_ids, long names, on_current_plan, alert group_values, dashboard options, NetSuite and Salesforce ids, Stripe invoice_metadata', async () => {
    const prev = monthStart(-1);
    const cur = monthStart(0);
    const token = h.app.adminToken;
    const a = await h.client.v1.customers.create({ name: 'As-of Co' });
    const b = await h.client.v1.customers.create({ name: 'Other Co' });
    // Names longer than 160 characters are refused, not cut.
    const long = await http(h.app, 'POST', '/v1/customers', { token, body: { name: 'x'.repeat(161) } });
    expect([long.status, long.json.field]).toEqual([400, 'name']);
    // Several customer_ids (the SDK joins them with commas); Salesforce ids are refused by name.
    const listed = await h.client.v1.customers.list({ customer_ids: [a.data.id, b.data.id] });
    expect(listed.data.map((c) => c.id).sort()).toEqual([a.data.id, b.data.id].sort());
    await expect(h.client.v1.customers.list({ salesforce_account_ids: ['0015500001WO1ZiABL'] })).rejects.toThrow(/salesforce_account_ids/);

    const fixed = await h.client.v1.contracts.products.create({ name: 'As-of credit', type: 'FIXED' });
    const card = await h.client.v1.contracts.rateCards.create({ name: 'card' });
    const credit = (name: string, from: string) => ({ name, product_id: fixed.data.id, priority: 1, access_schedule: { schedule_items: [{ amount: 5, starting_at: from, ending_before: monthStart(2) }] } });
    const contract = await h.client.v1.contracts.create({ customer_id: a.data.id, rate_card_id: card.data.id, starting_at: prev, credits: [credit('initial', prev)] });
    const ids = { customer_id: a.data.id, contract_id: contract.data.id };
    await h.client.v1.contracts.amend({ ...ids, starting_at: cur, credits: [credit('amended', cur)] });
    await h.client.v2.contracts.edit({ ...ids, add_credits: [credit('edited', cur)] } as Metronome.V2.ContractEditParams);
    const creditsAt = async (asOf?: string) => (await h.client.v2.contracts.retrieve({ ...ids, ...(asOf ? { as_of_date: asOf } : {}) })).data.credits?.map((c) => c.name);
    expect(await creditsAt(new Date(Date.parse(prev) + 3_600_000).toISOString())).toEqual(['initial']);
    expect(await creditsAt(cur)).toEqual(['initial', 'amended']);
    expect(await creditsAt()).toEqual(['initial', 'amended', 'edited']);
    const both = await http(h.app, 'POST', '/v2/contracts/get', { token, body: { ...ids, as_of_date: cur, include_ledgers: true } });
    expect([both.status, both.json.field]).toEqual([400, 'as_of_date']);

    // Invoices: type and credit type filter; limit and next_page page through them.
    const all = (await h.client.v1.customers.invoices.list({ customer_id: a.data.id })).data;
    expect(all.map((i) => i.start_timestamp)).toEqual([prev, cur]);
    expect((await h.client.v1.customers.invoices.list({ customer_id: a.data.id, type: 'SCHEDULED' })).data).toEqual([]);
    expect((await h.client.v1.customers.invoices.list({ customer_id: a.data.id, type: 'USAGE' })).data.map((i) => i.id)).toEqual(all.map((i) => i.id));
    expect((await h.client.v1.customers.invoices.list({ customer_id: a.data.id, credit_type_id: all[0]!.credit_type.id })).data.map((i) => i.id)).toEqual(all.map((i) => i.id));
    expect((await h.client.v1.customers.invoices.list({ customer_id: a.data.id, credit_type_id: '00000000-0000-4000-8000-000000000000' })).data).toEqual([]);
    const first = await h.client.v1.customers.invoices.list({ customer_id: a.data.id, limit: 1 });
    expect(first.data.map((i) => i.id)).toEqual([all[0]!.id]);
    expect(first.hasNextPage()).toBe(true);
    const second = await first.getNextPage();
    expect(second.data.map((i) => i.id)).toEqual([all[1]!.id]);
    expect(second.hasNextPage()).toBe(false);
    const unknown = await http(h.app, 'GET', `/v1/customers/${a.data.id}/invoices?webhook_notification_id=x`, { token });
    expect([unknown.status, unknown.json.field]).toEqual([400, 'webhook_notification_id']);

    // listBillableMetrics on_current_plan: a contract that ended last month does not count.
    const metric = await h.client.v1.billableMetrics.create({ name: 'regions', aggregation_type: 'COUNT', event_type_filter: { in_values: ['r'] }, group_keys: [['region']] });
    const usage = await h.client.v1.contracts.products.create({ name: 'Regions', type: 'USAGE', billable_metric_id: metric.data.id });
    const card2 = await h.client.v1.contracts.rateCards.create({ name: 'card 2' });
    await h.client.v1.contracts.rateCards.rates.add({ rate_card_id: card2.data.id, product_id: usage.data.id, entitled: true, rate_type: 'FLAT', price: 1, starting_at: monthStart(-2) });
    await h.client.v1.contracts.create({ customer_id: b.data.id, rate_card_id: card2.data.id, starting_at: monthStart(-2), ending_before: prev });
    expect((await h.client.v1.customers.listBillableMetrics({ customer_id: b.data.id })).data.map((m) => m.id)).toEqual([metric.data.id]);
    expect((await h.client.v1.customers.listBillableMetrics({ customer_id: b.data.id, on_current_plan: true })).data).toEqual([]);

    // customers.alerts.retrieve group_values: the state of the alert's own group; another group is refused by name.
    const alert = await h.client.v1.alerts.create({ alert_type: 'usage_threshold_reached', name: 'eu calls', threshold: 10, billable_metric_id: metric.data.id, customer_id: b.data.id, group_values: [{ key: 'region', value: 'eu' }] });
    const eu = await h.client.v1.customers.alerts.retrieve({ customer_id: b.data.id, alert_id: alert.data.id, group_values: [{ key: 'region', value: 'eu' }] });
    expect(eu.data.alert.id).toBe(alert.data.id);
    await expect(h.client.v1.customers.alerts.retrieve({ customer_id: b.data.id, alert_id: alert.data.id, group_values: [{ key: 'region', value: 'us' }] })).rejects.toThrow(/group_values/);
    await expect(h.client.v1.customers.alerts.retrieve({ customer_id: b.data.id, alert_id: alert.data.id, plans_or_contracts: 'PLANS' })).rejects.toThrow(/plans_or_contracts/);

    // Embeddable dashboards' options: invoice_type, hide_voided_invoices, billable_status_filter, credit_ledger_credit_type_id.
    const embed = async (customerId: string, dashboard: 'invoices' | 'commits_and_credits', options: { key: string; value: string }[]) => {
      const url = (await h.client.v1.dashboards.getEmbeddableURL({ customer_id: customerId, dashboard, dashboard_options: options as Metronome.V1.DashboardGetEmbeddableURLParams.DashboardOption[] })).data.url!;
      return (await http(h.app, 'GET', `/v1/accrue/embed/data?t=${new URL(url).searchParams.get('t')}`)).json.data;
    };
    expect((await embed(a.data.id, 'invoices', [])).draft).toBeDefined();
    expect((await embed(a.data.id, 'invoices', [{ key: 'invoice_type', value: 'SCHEDULED' }])).draft).toBeUndefined();
    expect((await embed(a.data.id, 'invoices', [{ key: 'billable_status_filter', value: 'unbillable' }])).draft).toBeUndefined();
    expect((await embed(a.data.id, 'commits_and_credits', [{ key: 'credit_ledger_credit_type_id', value: all[0]!.credit_type.id }])).balances.length).toBeGreaterThan(0);
    expect((await embed(a.data.id, 'commits_and_credits', [{ key: 'credit_ledger_credit_type_id', value: '00000000-0000-4000-8000-000000000000' }])).balances).toEqual([]);
    await expect(h.client.v1.dashboards.getEmbeddableURL({ customer_id: a.data.id, dashboard: 'invoices', dashboard_options: [{ key: 'hide_voided_invoices', value: 'yes' }] })).rejects.toThrow(/hide_voided_invoices/);
    const [ended] = await eventually('the ended contract\'s invoice frozen', async () => {
      const invs = (await h.client.v1.customers.invoices.list({ customer_id: b.data.id })).data;
      if ((invs[0] as unknown as { approval_status?: string } | undefined)?.approval_status !== 'PENDING_APPROVAL') throw new Error('not frozen yet');
      return invs;
    });
    const endedContract = (await h.client.v1.contracts.list({ customer_id: b.data.id })).data[0]!;
    await h.client.v1.contracts.archive({ customer_id: b.data.id, contract_id: endedContract.id, void_invoices: true });
    expect((await embed(b.data.id, 'invoices', [{ key: 'invoice_status_filter', value: 'ALL' }])).invoices.map((i: { id: string }) => i.id)).toEqual([ended!.id]);
    expect((await embed(b.data.id, 'invoices', [{ key: 'invoice_status_filter', value: 'ALL' }, { key: 'hide_voided_invoices', value: 'true' }])).invoices).toEqual([]);

    // NetSuite and Salesforce ids on an amendment, its credits and charges: kept and returned.
    const erp = { netsuite_sales_order_id: 'SO-42', salesforce_opportunity_id: '006-opp' };
    const amended = await h.client.v1.contracts.amend({
      ...ids, starting_at: cur, ...erp, credits: [{ ...credit('erp credit', cur), ...erp }],
      scheduled_charges: [{ product_id: fixed.data.id, netsuite_sales_order_id: 'SO-43', schedule: { schedule_items: [{ timestamp: cur, amount: 1 }] } }],
    });
    const withErp = (await h.client.v1.contracts.retrieve(ids)).data.amendments.find((x) => x.id === amended.data.id)!;
    expect([withErp.netsuite_sales_order_id, withErp.salesforce_opportunity_id]).toEqual(['SO-42', '006-opp']);
    expect([withErp.credits?.[0]?.netsuite_sales_order_id, withErp.credits?.[0]?.salesforce_opportunity_id, withErp.scheduled_charges[0]?.netsuite_sales_order_id]).toEqual(['SO-42', '006-opp', 'SO-43']);

    // stripe_config.invoice_metadata goes on a STRIPE gate's invoice: with gate NONE it is refused by name, nothing created.
    const gated = await http(h.app, 'POST', '/v1/contracts/create', { token, body: {
      customer_id: b.data.id, rate_card_id: card.data.id, starting_at: cur,
      commits: [{ type: 'PREPAID', product_id: fixed.data.id, access_schedule: { schedule_items: [{ amount: 10, starting_at: cur, ending_before: monthStart(1) }] },
        payment_gate_config: { payment_gate_type: 'NONE', stripe_config: { payment_type: 'INVOICE', invoice_metadata: { po: '42' } } } }],
    } });
    expect([gated.status, gated.json.field]).toEqual([400, 'commits[0].payment_gate_config.stripe_config.invoice_metadata']);
  });
});
