import { createHash } from 'node:crypto';
import { LockMode } from '@mikro-orm/core';
import { Router } from 'express';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import { ConflictError, ValidationError } from '../../billing/errors.js';
import { DEFAULT_RENEWAL_NOTICE_DAYS, type ContractTerms } from '../../billing/contract-terms.js';
import { customerBalances } from '../../db/balances.js';
import { findCustomer } from '../../db/customers.js';
import { BalanceGrant, Contract, Invoice } from '../../db/entities.js';
import { newId } from '../../db/ids.js';
import { voidBlockedByPayments } from '../../db/payments.js';
import { voidBlockedByGiveBacks } from '../../db/invoices.js';
import { queueContractTell } from '../../db/contract-tells.js';
import { tellContractWorkflowOrLeaveQueued } from '../../operations/contracts/tell-contract-workflow.js';
import { cancelInvoiceWorkflows } from '../../operations/invoices/cancel-invoice-workflows.js';
import type { Client } from '../../operations/workflow-client.js';
import { allow } from '../auth.js';
import { approvalPolicyInput, arrearsPolicyInput, chargesInput, externalIdsInput, grantInput, overridesInput, ProductLookup, renewalNoticeDaysInput } from '../../operations/input/contract-input.js';
import { bool, decimal, hourTimestamp, objectAt, reqUuid, str, stringRecord, timestamp, type Obj } from '../../operations/input/validate.js';
import { contractJson, findContract } from '../views/contracts.js';

/**
 * Changing contracts: end date, archive, amendments (v1) and edits (v2). Terms are data: drafts of
 * open periods are computed from them on every read, so a change — even backdated — re-rates the
 * open periods at once; frozen and finalized invoices never change (late changes to finalized
 * periods are not re-billed). The contract workflow is told to re-plan when its dates change:
 * the change's transaction queues the tell (db/contract-tells.ts), so a committed change is
 * answered 2xx even while Temporal is unreachable, and the outbound loop tells it later.
 */

/** A request's identity for `uniqueness_key`: its JSON with keys sorted, hashed. */
function requestHash(body: unknown): string {
  const canonical = (v: unknown): unknown => (Array.isArray(v) ? v.map(canonical)
    : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Obj)[k])])) : v);
  return createHash('sha256').update(JSON.stringify(canonical(body))).digest('hex');
}

/**
 * The edit an earlier request with this uniqueness key made (the same request: its id is the
 * answer), or a 409 when that request was a different one. A key is used once across the account,
 * whichever contract it edited.
 */
async function earlierEdit(em: EntityManager, contractId: string, key: string | undefined, hash: string): Promise<string | undefined> {
  if (!key) return undefined;
  const [row] = await em.execute<{ contract_id: string; request_hash: string; edit_id: string }[]>(
    'select contract_id::text as contract_id, request_hash, edit_id::text as edit_id from contract_edit where uniqueness_key = ?', [key]);
  if (!row) return undefined;
  if (row.contract_id !== contractId) throw Object.assign(new ConflictError(`uniqueness_key: ${key} was already used by an edit of contract ${row.contract_id} (edit ${row.edit_id})`), { field: 'uniqueness_key' });
  if (row.request_hash !== hash) throw Object.assign(new ConflictError(`uniqueness_key: ${key} was already used by a different edit of contract ${contractId} (edit ${row.edit_id})`), { field: 'uniqueness_key' });
  return row.edit_id;
}

export function contractChangesRouter(orm: MikroORM, temporal: Client, taskQueue: string): Router {
  const r = Router();

  r.post('/v1/contracts/updateEndDate', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['contract_id', 'customer_id', 'ending_before', 'allow_ending_before_finalized_invoice']);
    const em = orm.em.fork();
    const contract = await findContract(em, body);
    if (contract.archivedAt) throw new ConflictError(`contract ${contract.id} is archived`);
    const endingBefore = hourTimestamp(body, 'ending_before', '', { optional: true });
    const allowBefore = bool(body, 'allow_ending_before_finalized_invoice', '', { optional: true }) ?? true;
    if (endingBefore && Date.parse(endingBefore) <= contract.startingAt.getTime()) throw new ValidationError('ending_before', 'must be after the contract starting_at');
    if (endingBefore && !allowBefore) {
      const last = await em.findOne(Invoice, { contractId: contract.id, status: 'FINALIZED' }, { orderBy: { periodEnd: 'desc' } });
      if (last && last.periodEnd.getTime() > Date.parse(endingBefore)) throw new ValidationError('ending_before', `is before the end of finalized invoice ${last.id} (${last.periodEnd.toISOString()})`);
    }
    const token = await em.transactional(async (tx) => {
      const c = (await tx.findOne(Contract, { id: contract.id }, { lockMode: LockMode.PESSIMISTIC_WRITE }))!;
      c.endingBefore = endingBefore ? new Date(endingBefore) : null;
      return queueContractTell(tx, c.id);
    });
    await tellContractWorkflowOrLeaveQueued(temporal, taskQueue, em, contract.id, token);
    res.json({ data: { id: contract.id } });
  });

  r.post('/v1/contracts/archive', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['contract_id', 'customer_id', 'void_invoices']);
    const voidInvoices = bool(body, 'void_invoices')!;
    const em = orm.em.fork();
    const contract = await findContract(em, body);
    const pending: string[] = [];
    let token: string | undefined;
    if (!contract.archivedAt) {
      token = await em.transactional(async (tx) => {
        const c = (await tx.findOne(Contract, { id: contract.id }, { lockMode: LockMode.PESSIMISTIC_WRITE }))!;
        const now = new Date();
        c.archivedAt = now;
        await tx.nativeUpdate(BalanceGrant, { contractId: c.id, archivedAt: null }, { archivedAt: now });
        // Invoices waiting for approval are cancelled; finalized ones are voided on request, unless
        // one of them has payments not refunded (then nothing is archived).
        const live = await tx.find(Invoice, { contractId: c.id, status: { $ne: 'VOID' } }, voidInvoices ? { lockMode: LockMode.PESSIMISTIC_WRITE, orderBy: { id: 'asc' } } : {});
        const paid = voidInvoices ? await voidBlockedByPayments(tx, live.filter((i) => i.status === 'FINALIZED').map((i) => i.id)) : undefined;
        if (paid) throw new ConflictError(`void_invoices: ${paid}: a paid invoice is not voided; refund the payments first, or archive with void_invoices false`);
        const givenBack = voidInvoices ? await voidBlockedByGiveBacks(tx, live.filter((i) => i.status === 'FINALIZED').map((i) => i.id)) : undefined;
        if (givenBack) throw new ConflictError(`void_invoices: ${givenBack}; archive with void_invoices false`);
        for (const inv of live) {
          if (inv.status === 'DRAFT' || voidInvoices) {
            if (inv.status === 'DRAFT') pending.push(inv.id);
            inv.status = 'VOID';
            inv.voidedAt = now;
          }
        }
        return queueContractTell(tx, c.id);
      });
    }
    await cancelInvoiceWorkflows(temporal, pending);
    if (token) await tellContractWorkflowOrLeaveQueued(temporal, taskQueue, em, contract.id, token);
    res.json({ data: { id: contract.id } });
  });

  r.post('/v1/contracts/amend', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['contract_id', 'customer_id', 'starting_at', 'commits', 'credits', 'discounts', 'overrides', 'scheduled_charges', 'custom_fields', 'total_contract_value', 'netsuite_sales_order_id', 'salesforce_opportunity_id']);
    const em = orm.em.fork();
    const contract = await findContract(em, body);
    if (contract.archivedAt) throw new ConflictError(`contract ${contract.id} is archived`);
    const startingAt = timestamp(body, 'starting_at')!;
    const id = newId();
    const added = await addTerms(em, contract, body, { amendmentId: id, commits: 'commits', credits: 'credits', overrides: 'overrides', discounts: 'discounts', scheduled_charges: 'scheduled_charges' });
    const terms: ContractTerms = {
      ...added.terms,
      amendments: [...(contract.terms?.amendments ?? []), { id, starting_at: startingAt, created_at: new Date().toISOString(), created_by: 'accrue', ...externalIdsInput(body, '') }],
    };
    const tcv = decimal(body, 'total_contract_value', '', { optional: true, min: 0 });
    if (tcv) terms.total_contract_value = tcv;
    const custom = stringRecord(body, 'custom_fields');
    await em.transactional(async (tx) => {
      const c = (await tx.findOne(Contract, { id: contract.id }, { lockMode: LockMode.PESSIMISTIC_WRITE }))!;
      c.terms = terms;
      if (custom) c.customFields = { ...c.customFields, ...custom };
      for (const g of added.grants) tx.create(BalanceGrant, g);
    });
    res.json({ data: { id } });
  });

  // The edit and its uniqueness key commit together under the contract's row lock and the key's
  // advisory lock, so the same request sent again (a client's retry, even concurrently) answers the
  // first edit's id and applies nothing; another request with the key, on this contract or any
  // other, is a 409.
  r.post('/v2/contracts/edit', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['contract_id', 'customer_id', 'add_commits', 'add_credits', 'add_overrides', 'add_scheduled_charges', 'add_discounts', 'update_contract_end_date', 'update_contract_name', 'uniqueness_key', 'renewal_notice_days', 'approval_policy', 'arrears_policy']);
    const em = orm.em.fork();
    const contract = await findContract(em, body);
    const key = str(body, 'uniqueness_key', '', { optional: true, max: 128 });
    const hash = requestHash(body);
    const answer = (editId: string) => res.json({ data: { id: contract.id, edit: { id: editId } } });
    const earlier = await earlierEdit(em, contract.id, key, hash);
    if (earlier) return void answer(earlier);
    if (contract.archivedAt) throw new ConflictError(`contract ${contract.id} is archived`);
    let end: Date | null | undefined;
    if (body.update_contract_end_date !== undefined) {
      const at = body.update_contract_end_date === null ? null : hourTimestamp(body, 'update_contract_end_date')!;
      if (at && Date.parse(at) <= contract.startingAt.getTime()) throw new ValidationError('update_contract_end_date', 'must be after the contract starting_at');
      end = at ? new Date(at) : null;
    }
    const name = body.update_contract_name;
    if (name !== undefined && (typeof name !== 'string' || !name.trim())) throw new ValidationError('update_contract_name', 'must be a non-empty string');
    const notice = renewalNoticeDaysInput(body);
    // approval_policy: an object sets it, null returns the contract to ACCRUE_APPROVAL_POLICY. It
    // applies to invoices frozen from now on; one already waiting keeps waiting.
    const approvalPolicy = approvalPolicyInput(body);
    const arrearsPolicy = arrearsPolicyInput(body);
    const editId = newId();
    const outcome = await em.transactional(async (tx) => {
      const c = (await tx.findOne(Contract, { id: contract.id }, { lockMode: LockMode.PESSIMISTIC_WRITE }))!;
      // The key is the account's, not the contract's: edits of two contracts with one key meet here.
      if (key) await tx.execute('select pg_advisory_xact_lock(hashtextextended(?, 0))', [`accrue:contract-edit-key:${key}`]);
      const again = await earlierEdit(tx, c.id, key, hash);
      if (again) return { editId: again };
      if (c.archivedAt) throw new ConflictError(`contract ${c.id} is archived`);
      // Terms are added to the locked row, so concurrent edits never lose each other's terms.
      const added = await addTerms(tx, c, body, { amendmentId: editId, commits: 'add_commits', credits: 'add_credits', overrides: 'add_overrides', discounts: 'add_discounts', scheduled_charges: 'add_scheduled_charges' });
      const noticeChanged = notice !== undefined && notice !== (c.terms?.renewal_notice_days ?? DEFAULT_RENEWAL_NOTICE_DAYS);
      let terms: ContractTerms = { ...added.terms, edits: [...(added.terms.edits ?? []), { id: editId, created_at: new Date().toISOString() }] };
      if (notice !== undefined) terms = { ...terms, renewal_notice_days: notice };
      if (arrearsPolicy) terms = { ...terms, arrears_policy: arrearsPolicy };
      if (approvalPolicy) terms = { ...terms, approval_policy: approvalPolicy };
      else if (body.approval_policy === null) {
        const { approval_policy: _cleared, ...rest } = terms;
        terms = rest;
      }
      c.terms = terms;
      if (end !== undefined) c.endingBefore = end;
      if (typeof name === 'string') c.name = name;
      for (const g of added.grants) tx.create(BalanceGrant, g);
      await tx.flush();
      if (key) await tx.execute('insert into contract_edit (contract_id, uniqueness_key, request_hash, edit_id) values (?, ?, ?, ?)', [c.id, key, hash, editId]);
      // The workflow's renewal notice timer depends on both the end date and the notice.
      return { editId, token: end !== undefined || noticeChanged ? await queueContractTell(tx, c.id) : undefined };
    });
    if (outcome.token) await tellContractWorkflowOrLeaveQueued(temporal, taskQueue, em, contract.id, outcome.token);
    answer(outcome.editId);
  });

  for (const path of ['/v2/contracts/get', '/v2/contracts/list'] as const) {
    r.post(path, allow('read', 'finance'), async (req, res) => {
      const single = path.endsWith('get');
      const body = objectAt(req.body, '', single ? ['contract_id', 'customer_id', 'as_of_date', 'include_balance', 'include_ledgers'] : ['customer_id', 'covering_date', 'starting_at', 'include_archived', 'include_balance', 'include_ledgers']);
      const em = orm.em.fork();
      const withBalance = bool(body, 'include_balance', '', { optional: true }) || bool(body, 'include_ledgers', '', { optional: true });
      // as_of_date: the contract's terms as its amendment history had them then (see contractJson).
      const asOf = single ? timestamp(body, 'as_of_date', '', { optional: true }) : undefined;
      if (asOf && body.include_ledgers) throw new ValidationError('as_of_date', 'cannot be used with include_ledgers');
      const customer = await findCustomer(em, reqUuid(body, 'customer_id'));
      const balances = withBalance ? new Map((await customerBalances(em, customer.id, { includeArchived: true })).map((b) => [b.grant.id, b])) : undefined;
      const v2 = async (c: Contract) => {
        const v1 = await contractJson(em, c, balances, { ledgers: !!body.include_ledgers, ...(asOf ? { asOf } : {}) });
        return { id: v1.id, customer_id: v1.customer_id, ...v1.current, custom_fields: v1.custom_fields, ...(c.uniquenessKey ? { uniqueness_key: c.uniquenessKey } : {}), ...(c.archivedAt ? { archived_at: c.archivedAt.toISOString() } : {}) };
      };
      if (single) {
        res.json({ data: await v2(await findContract(em, body)) });
        return;
      }
      const archived = bool(body, 'include_archived', '', { optional: true });
      const covering = timestamp(body, 'covering_date', '', { optional: true });
      const startingAt = timestamp(body, 'starting_at', '', { optional: true });
      let contracts = await em.find(Contract, { customerId: customer.id, ...(archived ? {} : { archivedAt: null }) }, { orderBy: { startingAt: 'asc', id: 'asc' } });
      if (covering) contracts = contracts.filter((c) => c.startingAt.getTime() <= Date.parse(covering) && (!c.endingBefore || c.endingBefore.getTime() > Date.parse(covering)));
      if (startingAt) contracts = contracts.filter((c) => c.startingAt.getTime() >= Date.parse(startingAt));
      const data = [];
      for (const c of contracts) data.push(await v2(c));
      res.json({ data });
    });
  }

  return r;
}

/** New overrides, charges, discounts, commits and credits for an amendment or edit, validated together. */
async function addTerms(em: EntityManager, contract: Contract, body: Obj, keys: { amendmentId: string; commits: string; credits: string; overrides: string; discounts: string; scheduled_charges: string }) {
  const products = new ProductLookup(em);
  const current = contract.terms ?? {};
  const overrides = await overridesInput(body, keys.overrides, '', products, keys.amendmentId);
  const scheduled = await chargesInput(body, keys.scheduled_charges as 'scheduled_charges', '', products, keys.amendmentId);
  const discounts = await chargesInput(body, keys.discounts as 'discounts', '', products, keys.amendmentId);
  if (current.multiplier_override_prioritization === 'EXPLICIT') {
    overrides.forEach((o, i) => { if (o.type === 'MULTIPLIER' && o.priority === undefined) throw new ValidationError(`${keys.overrides}[${i}].priority`, 'is required under EXPLICIT multiplier_override_prioritization'); });
  }
  const grants: BalanceGrant[] = [];
  for (const [key, kind] of [[keys.commits, 'COMMIT'], [keys.credits, 'CREDIT']] as const) {
    const list = body[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw new ValidationError(key, 'must be an array');
    for (let i = 0; i < list.length; i++) grants.push(await grantInput(list[i], `${key}[${i}]`, kind, { customerId: contract.customerId, contractId: contract.id, products, amendmentId: keys.amendmentId }));
  }
  const terms: ContractTerms = {
    ...current,
    overrides: [...(current.overrides ?? []), ...overrides],
    scheduled_charges: [...(current.scheduled_charges ?? []), ...scheduled],
    discounts: [...(current.discounts ?? []), ...discounts],
  };
  return { terms, grants };
}
