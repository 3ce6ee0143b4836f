import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { CrmFacts } from '../billing/crm.js';
import { dec, type Dec } from '../billing/money.js';
import { customerBalances } from './balances.js';
import { Contract, Customer, CustomerIngestAlias, Invoice } from './entities.js';
import { newId } from './ids.js';
import { customerDrafts } from './invoices.js';
import { lifecycleStates } from './lifecycle.js';
import { lifecycleTimes } from '../billing/lifecycle-times.js';
import { standings } from './payments.js';

/**
 * HubSpot links and what was written there (tables in Migration20261209100000_crm): the
 * customer of a company, the contract of a deal, the properties last pushed to each object, tasks
 * and notes made — each written once, so every CRM activity can be retried.
 */

/**
 * The customer of a HubSpot company, created or updated: the one already linked to the company,
 * else the one whose external_id (first ingest alias) is the company id, else a new customer with
 * that external_id. Name and billing email follow the CRM. Two deals of one company at once find
 * the same customer (the alias and the link are unique; the loser of a race reads the winner's).
 */
export async function upsertCrmCustomer(em: EntityManager, c: { companyId: string; name: string; billingEmail: string | null }): Promise<{ customerId: string; created: boolean }> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await em.fork().transactional(async (tx) => {
        const [linked] = await tx.execute<{ customer_id: string }[]>('select customer_id::text as customer_id from crm_company where company_id = ?', [c.companyId]);
        const aliasOwner = linked ? null : await tx.findOne(CustomerIngestAlias, { alias: c.companyId });
        const existingId = linked?.customer_id ?? aliasOwner?.customerId;
        if (existingId) {
          const customer = await tx.findOneOrFail(Customer, { id: existingId });
          if (customer.name !== c.name || (c.billingEmail && customer.billingEmail !== c.billingEmail)) {
            customer.name = c.name;
            if (c.billingEmail) customer.billingEmail = c.billingEmail;
            customer.updatedAt = new Date();
          }
          await tx.flush();
          if (!linked) await tx.execute('insert into crm_company (customer_id, company_id) values (?, ?)', [existingId, c.companyId]);
          return { customerId: existingId, created: false };
        }
        const id = newId();
        const now = new Date();
        tx.create(Customer, { id, name: c.name, billingEmail: c.billingEmail, customFields: {}, createdAt: now, updatedAt: now });
        await tx.flush();
        tx.create(CustomerIngestAlias, { alias: c.companyId, customerId: id, position: 0 });
        await tx.flush();
        await tx.execute('insert into crm_company (customer_id, company_id) values (?, ?)', [id, c.companyId]);
        return { customerId: id, created: true };
      });
    } catch (err) {
      // Another deal of the same company linked it first: take that one.
      if (err instanceof UniqueConstraintViolationException && attempt < 2) continue;
      throw err;
    }
  }
}

export async function contractIdByUniquenessKey(em: EntityManager, key: string): Promise<{ id: string; customerId: string } | undefined> {
  const [r] = await em.execute<{ id: string; customer_id: string }[]>('select id::text as id, customer_id::text as customer_id from contract where uniqueness_key = ?', [key]);
  return r && { id: r.id, customerId: r.customer_id };
}

export async function recordCrmDeal(em: EntityManager, d: { dealId: string; customerId: string; contractId: string; companyId: string; ownerId: string | null }): Promise<void> {
  await em.execute(`
    insert into crm_deal (deal_id, customer_id, contract_id, company_id, owner_id) values (?, ?, ?, ?, ?)
    on conflict (deal_id) do update set owner_id = excluded.owner_id`, [d.dealId, d.customerId, d.contractId, d.companyId, d.ownerId]);
}

export interface CrmLink {
  customerId: string;
  companyId: string;
  deals: { dealId: string; contractId: string; ownerId: string | null }[];
}

export async function crmLink(em: EntityManager, customerId: string): Promise<CrmLink | null> {
  const [company] = await em.execute<{ company_id: string }[]>('select company_id from crm_company where customer_id = ?', [customerId]);
  if (!company) return null;
  const deals = await em.execute<{ deal_id: string; contract_id: string; owner_id: string | null }[]>(
    'select deal_id, contract_id::text as contract_id, owner_id from crm_deal where customer_id = ? order by created_at, deal_id', [customerId]);
  return { customerId, companyId: company.company_id, deals: deals.map((d) => ({ dealId: d.deal_id, contractId: d.contract_id, ownerId: d.owner_id })) };
}

/** Which of these customers are linked to a HubSpot company. */
export async function crmLinkedCustomers(em: EntityManager, customerIds: string[]): Promise<Set<string>> {
  if (!customerIds.length) return new Set();
  const rows = await em.execute<{ customer_id: string }[]>('select customer_id::text as customer_id from crm_company where customer_id = any(?::uuid[])', [`{${[...new Set(customerIds)].join(',')}}`]);
  return new Set(rows.map((r) => r.customer_id));
}

/**
 * The billing facts of a customer (for its company) and of each linked contract (for its deal),
 * from the same drafts, balances, lifecycle log and payment standings the API shows.
 * The company's lifecycle state is ARREARS when any of its live contracts is in arrears, else
 * that of its main contract — the latest started one that has not ended (a renewal signed ahead
 * of its start is not yet the main one), else the latest started — whose end is the renewal date.
 * The last invoice is the finalized (or voided) one of the latest period.
 */
export async function crmFacts(em: EntityManager, customerId: string, contractIds: string[], now: Date): Promise<{ company: CrmFacts; contracts: Map<string, CrmFacts> }> {
  const t = now.getTime();
  const contracts = await em.find(Contract, { customerId }, { orderBy: { startingAt: 'desc', id: 'asc' } });
  const drafts = await customerDrafts(em, customerId, now);
  const current = drafts.filter((d) => Date.parse(d.view.periodStart) <= t && t < Date.parse(d.view.periodEnd));
  const balances = await customerBalances(em, customerId, { now, drafts });
  const states = await lifecycleStates(em, contracts);
  const invoices = await em.find(Invoice, { customerId, status: { $in: ['FINALIZED', 'VOID'] }, finalizedAt: { $ne: null } }, { orderBy: { periodEnd: 'desc', finalizedAt: 'desc', id: 'asc' } });
  const standing = await standings(em, invoices);
  const sum = (xs: Dec[]) => xs.reduce((a, b) => a.plus(b), dec(0));
  const stateOf = (c: Contract) => states.get(c.id)?.state ?? null;

  // The company's facts count every commit (customer-level ones too); a deal's, its contract's.
  const factsOf = (scope: Contract[], customerLevel: boolean): CrmFacts => {
    const ids = new Set(scope.map((c) => c.id));
    const commits = balances.filter((b) => b.grant.kind !== 'CREDIT' && (customerLevel || (!!b.grant.contractId && ids.has(b.grant.contractId))));
    const scoped = current.filter((d) => ids.has(d.contract.id));
    const started = scope.filter((c) => c.startingAt.getTime() <= t);
    const live = (c: Contract) => !['ENDED', 'ARCHIVED'].includes(stateOf(c) ?? '');
    const main = started.find(live) ?? scope.find(live) ?? started[0] ?? scope[0];
    const state = scope.some((c) => stateOf(c) === 'ARREARS') ? 'ARREARS' : main ? stateOf(main) : null;
    const last = invoices.find((i) => ids.has(i.contractId));
    return {
      currentPeriodSpendCents: scoped.length ? sum(scoped.map((d) => dec(d.view.total))).toFixed() : scope.length ? '0' : null,
      commitRemainingCents: commits.length ? sum(commits.map((b) => b.balance)).toFixed() : null,
      lifecycleState: state,
      lastInvoice: last ? { id: last.id, totalCents: dec(last.total).toFixed(), status: last.status === 'VOID' ? 'VOID' : standing.get(last.id)?.status ?? 'UNPAID' } : null,
      renewalDate: main?.endingBefore ? main.endingBefore.toISOString() : null,
    };
  };
  const live = contracts.filter((c) => !c.archivedAt);
  const company = factsOf(live.length ? live : contracts, true);
  const byContract = new Map(contractIds.map((id) => [id, factsOf(contracts.filter((c) => c.id === id), false)]));
  return { company, contracts: byContract };
}

/** What was last written to the object, and when every property was last written there. */
export async function lastPushed(em: EntityManager, objectType: 'companies' | 'deals', objectId: string): Promise<{ properties: Record<string, string>; fullPushedAt: Date } | null> {
  const [r] = await em.execute<{ properties: Record<string, string>; full_pushed_at: Date }[]>('select properties, full_pushed_at from crm_push where object_type = ? and object_id = ?', [objectType, objectId]);
  return r ? { properties: r.properties, fullPushedAt: new Date(r.full_pushed_at) } : null;
}

/** Records what HubSpot now holds for the object (merged over what it held); `full`: every property was written. */
export async function recordPushed(em: EntityManager, objectType: 'companies' | 'deals', objectId: string, properties: Record<string, string>, full: boolean): Promise<void> {
  await em.execute(`
    insert into crm_push (object_type, object_id, properties) values (?, ?, ?::jsonb)
    on conflict (object_type, object_id) do update set properties = crm_push.properties || excluded.properties, pushed_at = now(),
      full_pushed_at = case when ? then now() else crm_push.full_pushed_at end`,
  [objectType, objectId, JSON.stringify(properties), full]);
}

export interface CrmTaskDue {
  contractId: string;
  /** One task per key: `renewal:<end date>`, `arrears:<transition seq>`. */
  key: string;
  kind: 'renewal_notice' | 'arrears_entered';
  dealId: string;
  ownerId: string | null;
  at: string;
  reason: string;
}

/**
 * The tasks the customer's deal owners are due and do not have yet: one per renewal of a deal's
 * contract once its renewal notice time has come (while it runs: derived from the contract, so
 * a notice that came while the contract was in arrears counts too), and one per entry into
 * arrears (its lifecycle transition).
 */
export async function crmTasksDue(em: EntityManager, customerId: string, now: Date): Promise<CrmTaskDue[]> {
  const deals = await em.execute<{ deal_id: string; contract_id: string; owner_id: string | null }[]>(
    'select deal_id, contract_id::text as contract_id, owner_id from crm_deal where customer_id = ? order by created_at, deal_id', [customerId]);
  if (!deals.length) return [];
  const contracts = new Map((await em.find(Contract, { id: { $in: deals.map((d) => d.contract_id) } })).map((c) => [c.id, c]));
  const states = await lifecycleStates(em, [...contracts.values()]);
  const due: CrmTaskDue[] = [];
  for (const d of deals) {
    const c = contracts.get(d.contract_id);
    if (!c || c.archivedAt || !c.endingBefore) continue;
    const at = lifecycleTimes(c, { trialReminderDays: 0 }).renewalNoticeAt;
    const state = states.get(c.id)?.state;
    if (at && Date.parse(at) <= now.getTime() && now < c.endingBefore && state !== 'TRIAL' && state !== 'ENDED' && state !== 'ARCHIVED') {
      due.push({ contractId: c.id, key: `renewal:${c.endingBefore.toISOString()}`, kind: 'renewal_notice', dealId: d.deal_id, ownerId: d.owner_id, at, reason: `The contract ends on ${c.endingBefore.toISOString().slice(0, 10)}; its renewal notice period began` });
    }
  }
  const arrears = await em.execute<{ contract_id: string; seq: number; deal_id: string; owner_id: string | null; at: Date; reason: string }[]>(`
    select t.contract_id::text as contract_id, t.seq, d.deal_id, d.owner_id, t.at, t.reason
    from crm_deal d join contract_lifecycle_transition t on t.contract_id = d.contract_id
    where d.customer_id = ? and 'arrears_entered' = any(t.hooks)
    order by t.at, t.seq`, [customerId]);
  for (const r of arrears) {
    due.push({ contractId: r.contract_id, key: `arrears:${r.seq}`, kind: 'arrears_entered', dealId: r.deal_id, ownerId: r.owner_id, at: new Date(r.at).toISOString(), reason: `Entered arrears: ${r.reason}` });
  }
  if (!due.length) return [];
  const done = new Set((await em.execute<{ contract_id: string; key: string }[]>(
    'select contract_id::text as contract_id, key from crm_task where contract_id = any(?::uuid[]) and task_id is not null', [`{${[...contracts.keys()].join(',')}}`])).map((r) => `${r.contract_id}|${r.key}`));
  return due.filter((t) => !done.has(`${t.contractId}|${t.key}`));
}

export async function recordCrmTask(em: EntityManager, t: { contractId: string; key: string; dealId: string; kind: string; taskId: string }): Promise<void> {
  await em.execute(`
    insert into crm_task (contract_id, key, deal_id, kind, task_id) values (?, ?, ?, ?, ?)
    on conflict (contract_id, key) do update set task_id = excluded.task_id where crm_task.task_id is null`, [t.contractId, t.key, t.dealId, t.kind, t.taskId]);
}

export async function crmNoteId(em: EntityManager, dealId: string, marker: string): Promise<string | null> {
  const [r] = await em.execute<{ note_id: string | null }[]>('select note_id from crm_note where deal_id = ? and marker = ?', [dealId, marker]);
  return r?.note_id ?? null;
}

export async function recordCrmNote(em: EntityManager, dealId: string, marker: string, noteId: string): Promise<void> {
  await em.execute(`
    insert into crm_note (deal_id, marker, note_id) values (?, ?, ?)
    on conflict (deal_id, marker) do update set note_id = excluded.note_id where crm_note.note_id is null`, [dealId, marker, noteId]);
}
