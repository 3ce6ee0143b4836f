import { LockMode } from '@mikro-orm/core';
import type { EntityManager, MikroORM } from '@mikro-orm/postgresql';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { ConflictError, NotFoundError, UnavailableError, ValidationError } from '../../billing/errors.js';
import { ANCHOR_DAYS, FREQUENCIES, periodAt } from '../../billing/periods.js';
import { BalanceGrant, Contract, RateCard } from '../../db/entities.js';
import { approvalPolicyInput, arrearsPolicyInput, grantInput, ProductLookup, renewalNoticeDaysInput, spendThresholdInput, termsInput, thresholdConfigInput, trialSpecInput } from '../input/contract-input.js';
import { DEFAULT_RENEWAL_NOTICE_DAYS, type ContractTerms } from '../../billing/contract-terms.js';
import { findCustomer } from '../../db/customers.js';
import { newId } from '../../db/ids.js';
import { clearContractTell, queueContractTell } from '../../db/contract-tells.js';
import { contractSchedule } from '../../db/invoices.js';
import type { ContractWorkflowInput } from '../../workflows/contract-messages.js';
import { ContractIdKey, CustomerIdKey, LifecycleStateKey, contractWorkflowId } from '../../workflows/search-attributes.js';
import { billingConfigOf } from '../../db/stripe.js';
import { gatedCommitAmount, holdGatedCommit, markGatedCommitStarted } from '../../db/recharge.js';
import { dec } from '../../billing/money.js';
import type { PaymentGateConfig } from '../../billing/stripe-metadata.js';
import type { StripeSettings } from '../../stack/config.js';
import { hourTimestamp, objectAt, oneOf, reqUuid, str, stringRecord, timestamp, uuid, type Obj } from '../input/validate.js';
import { startCommitPayment } from '../payments/start-commit-payment.js';
import { WorkflowExecutionAlreadyStartedError, WorkflowIdReusePolicy, type Client } from '../workflow-client.js';
import { tellContractWorkflowOrLeaveQueued } from './tell-contract-workflow.js';

const CREATE_FIELDS = ['customer_id', 'starting_at', 'ending_before', 'rate_card_id', 'rate_card_alias', 'name', 'uniqueness_key', 'custom_fields', 'usage_statement_schedule',
  'overrides', 'commits', 'credits', 'discounts', 'scheduled_charges', 'multiplier_override_prioritization', 'net_payment_terms_days', 'total_contract_value', 'transition',
  'trial_spec', 'renewal_notice_days', 'approval_policy', 'arrears_policy', 'prepaid_balance_threshold_configuration', 'spend_threshold_configuration'];
const SCHEDULE_FIELDS = ['frequency', 'day', 'billing_anchor_date'];

function schedule(body: Obj) {
  if (body.usage_statement_schedule === undefined || body.usage_statement_schedule === null) {
    return { frequency: 'MONTHLY' as const, day: 'FIRST_OF_MONTH' as const, anchor: undefined };
  }
  const path = 'usage_statement_schedule';
  const s = objectAt(body.usage_statement_schedule, path, SCHEDULE_FIELDS);
  const frequency = oneOf(s, 'frequency', FREQUENCIES, path)!;
  const day = oneOf(s, 'day', ANCHOR_DAYS, path, { optional: true }) ?? 'FIRST_OF_MONTH';
  const anchor = timestamp(s, 'billing_anchor_date', path, { optional: true });
  if (day === 'CUSTOM_DATE' && !anchor) throw new ValidationError(`${path}.billing_anchor_date`, 'is required when day is CUSTOM_DATE');
  if (day !== 'CUSTOM_DATE' && anchor) throw new ValidationError(`${path}.billing_anchor_date`, 'is only allowed when day is CUSTOM_DATE');
  return { frequency, day, anchor };
}

/** The rate card by id, or by alias as of the contract's start (the card it was most recently given to). */
async function rateCardFor(em: EntityManager, body: Obj, startingAt: string): Promise<RateCard> {
  const id = uuid(body, 'rate_card_id', '', { optional: true });
  const alias = str(body, 'rate_card_alias', '', { optional: true });
  if (id && alias) throw new ValidationError('rate_card_alias', 'give rate_card_id or rate_card_alias, not both');
  if (!id && !alias) throw new ValidationError('rate_card_id', 'is required (or rate_card_alias)');
  let card: RateCard | null = null;
  if (id) {
    card = await em.findOne(RateCard, { id });
    if (!card) throw new NotFoundError('rate card', id, 'rate_card_id');
  } else {
    const t = Date.parse(startingAt);
    const recency = (c: RateCard) => (c.updatedAt ?? c.createdAt).getTime();
    const cards = (await em.find(RateCard, { archivedAt: null })).sort((a, b) => recency(b) - recency(a))
      .filter((c) => c.aliases.some((a) => a.name === alias && (!a.starting_at || Date.parse(a.starting_at) <= t) && (!a.ending_before || Date.parse(a.ending_before) > t)));
    card = cards[0] ?? null;
    if (!card) throw new NotFoundError('rate card with alias', alias!, 'rate_card_alias');
  }
  if (card.archivedAt) throw new ValidationError(id ? 'rate_card_id' : 'rate_card_alias', 'refers to an archived rate card');
  return card;
}

function transitionInput(body: Obj): ContractTerms['transition'] | undefined {
  if (body.transition === undefined || body.transition === null) return undefined;
  const t = objectAt(body.transition, 'transition', ['from_contract_id', 'type']);
  return { from_contract_id: reqUuid(t, 'from_contract_id', 'transition'), type: oneOf(t, 'type', ['RENEWAL', 'SUPERSEDE'] as const, 'transition')! };
}

/**
 * The new contract takes over from the old one at its starting_at: a RENEWAL starts exactly when
 * the old contract ends; SUPERSEDE ends the old contract there.
 */
async function applyTransition(tx: EntityManager, t: NonNullable<ContractTerms['transition']>, next: Contract): Promise<Contract> {
  const from = await tx.findOne(Contract, { id: t.from_contract_id, customerId: next.customerId }, { lockMode: LockMode.PESSIMISTIC_WRITE });
  if (!from) throw new NotFoundError('contract of this customer', t.from_contract_id, 'transition.from_contract_id');
  if (from.archivedAt) throw new ValidationError('transition.from_contract_id', 'refers to an archived contract');
  const existing = await tx.execute<{ id: string }[]>(`select id::text as id from contract where terms -> 'transition' ->> 'from_contract_id' = ?`, [from.id]);
  if (existing.length) throw new ConflictError(`contract ${from.id} already transitioned to ${existing[0]!.id}`);
  const at = next.startingAt.getTime();
  if (t.type === 'RENEWAL' && from.endingBefore?.getTime() !== at) {
    throw new ValidationError('starting_at', `a RENEWAL starts when the contract it renews ends (${from.endingBefore?.toISOString() ?? 'it has no end date'}); use SUPERSEDE to end it here`);
  }
  if (at <= from.startingAt.getTime()) throw new ValidationError('starting_at', 'must be after the starting_at of the contract it takes over from');
  from.endingBefore = next.startingAt;
  await tx.flush();
  return from;
}

/**
 * Creates a contract from a `v1/contracts/create` request: validates it (every error names its field), writes the contract
 * and its commits and credits in one transaction, and starts its `contract/<id>` workflow — or,
 * when Temporal cannot take it, removes the contract again (nothing half-created). Shared by the
 * route and by the CRM's deal activity (which sends the same Metronome-shaped
 * request). The workflow is started by its registered name: this module is reached from activities,
 * so it imports no workflow module that imports them (see operations/README.md).
 */
export async function createContract({ orm, temporal, taskQueue, stripe }: { orm: MikroORM; temporal: Client; taskQueue: string; stripe?: StripeSettings | undefined }, input: unknown): Promise<{ id: string; customerId: string }> {
  const body = objectAt(input, '', CREATE_FIELDS);
  const customerId = reqUuid(body, 'customer_id');
  const startingAt = hourTimestamp(body, 'starting_at') as string;
  const endingBefore = hourTimestamp(body, 'ending_before', '', { optional: true });
  if (endingBefore && Date.parse(endingBefore) <= Date.parse(startingAt)) throw new ValidationError('ending_before', 'must be after starting_at');
  const sched = schedule(body);
  const em = orm.em.fork();
  const customer = await findCustomer(em, customerId);
  if (customer.archivedAt) throw new ValidationError('customer_id', 'refers to an archived customer');
  const card = await rateCardFor(em, body, startingAt);
  const products = new ProductLookup(em);
  const contractId = newId();
  const terms = await termsInput(body, products);
  const trial = trialSpecInput(body, startingAt, endingBefore);
  if (trial) terms.trial_spec = trial;
  terms.renewal_notice_days = renewalNoticeDaysInput(body) ?? DEFAULT_RENEWAL_NOTICE_DAYS;
  const approvalPolicy = approvalPolicyInput(body);
  if (approvalPolicy) terms.approval_policy = approvalPolicy;
  const arrearsPolicy = arrearsPolicyInput(body);
  if (arrearsPolicy) terms.arrears_policy = arrearsPolicy;
  const threshold = await thresholdConfigInput(body, products);
  if (threshold) terms.prepaid_balance_threshold_configuration = threshold;
  const spendThreshold = await spendThresholdInput(body, products);
  if (spendThreshold) terms.spend_threshold_configuration = spendThreshold;
  // Charged through Stripe when crossed: refused up front while Stripe is off, as a gated commit is.
  for (const [key, config] of [['prepaid_balance_threshold_configuration', threshold], ['spend_threshold_configuration', spendThreshold]] as const) {
    if (config?.payment_gate_config.payment_gate_type === 'STRIPE' && !stripe?.secretKey) {
      throw new ConflictError(`${key}.payment_gate_config.payment_gate_type: STRIPE is off in this Accrue (STRIPE_SECRET_KEY is not set)`);
    }
  }
  const grants: BalanceGrant[] = [];
  const gates = new Map<string, PaymentGateConfig>();
  for (const [key, kind] of [['commits', 'COMMIT'], ['credits', 'CREDIT']] as const) {
    const list = body[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw new ValidationError(key, 'must be an array');
    for (let i = 0; i < list.length; i++) {
      grants.push(await grantInput(list[i], `${key}[${i}]`, kind, { customerId: customer.id, contractId, products, gates }));
      if (gates.has(grants.at(-1)!.id)) {
        const field = `${key}[${i}].payment_gate_config.payment_gate_type`;
        if (!stripe?.secretKey) throw new ConflictError(`${field}: STRIPE is off in this Accrue (STRIPE_SECRET_KEY is not set)`);
        if (!(await billingConfigOf(em, customer.id))) throw new ValidationError(field, 'STRIPE needs the customer\'s Stripe billing config (v1.customers.billingConfig.create) first');
        const g = grants.at(-1)!;
        // Charged as one Stripe item in whole cents; a uniqueness key would be taken only once paid.
        if (!dec(gatedCommitAmount(g)).isInteger()) throw new ValidationError(`${key}[${i}].${g.invoiceSchedule ? 'invoice_schedule' : 'access_schedule'}`, `a payment-gated commit's price must be whole cents, got ${gatedCommitAmount(g)}`);
        if (g.uniquenessKey) throw new ValidationError(`${key}[${i}].uniqueness_key`, 'is not supported on a payment-gated commit');
      }
    }
  }

  const contract: Contract = {
    id: contractId, customerId: customer.id, rateCardId: card.id,
    name: str(body, 'name', '', { optional: true }) ?? null,
    startingAt: new Date(startingAt), endingBefore: endingBefore ? new Date(endingBefore) : null,
    usageStatementFrequency: sched.frequency, usageStatementDay: sched.day,
    billingAnchorDate: sched.anchor ? new Date(sched.anchor) : null,
    uniquenessKey: str(body, 'uniqueness_key', '', { optional: true, max: 128 }) ?? null,
    customFields: stringRecord(body, 'custom_fields') ?? {},
    terms,
    createdAt: new Date(), archivedAt: null,
  };
  periodAt(contractSchedule(contract), 0); // rejects an impossible schedule before anything is written
  const transition = transitionInput(body);
  if (transition) contract.terms = { ...contract.terms, transition };
  let fromTell: string | undefined;
  // What the transition changed on the old contract, to undo if the workflow cannot be started.
  let fromBefore: { endingBefore: Date | null; hadTell: boolean } | undefined;
  try {
    // The contract and its commits and credits commit together, or not at all.
    await em.transactional(async (tx) => {
      const endingBefore = transition ? (await tx.findOne(Contract, { id: transition.from_contract_id, customerId: customer.id }, { lockMode: LockMode.PESSIMISTIC_WRITE }))?.endingBefore ?? null : null;
      const from = transition ? await applyTransition(tx, transition, contract) : undefined;
      if (from) {
        const queued = await tx.execute('select 1 from contract_tell where contract_id = ?', [from.id]);
        fromBefore = { endingBefore, hadTell: queued.length > 0 };
        fromTell = await queueContractTell(tx, from.id);
      }
      tx.create(Contract, contract);
      await tx.flush();
      // A payment-gated commit waits in gated_commit until paid (commit-payment/<id> grants it).
      for (const g of grants) {
        if (gates.has(g.id)) await holdGatedCommit(tx, g, gates.get(g.id)!);
        else tx.create(BalanceGrant, g);
      }
      void from; // the old contract's workflow rolls its commits over once its last period closes
    });
  } catch (err) {
    if (err instanceof UniqueConstraintViolationException) throw new ConflictError(`uniqueness_key: ${/balance_grant/.test(err.message) ? 'a commit or credit uniqueness_key' : contract.uniquenessKey} was already used`);
    throw err;
  }

  // The contract is committed; now its lifecycle workflow. If Temporal cannot take it, the
  // contract is removed again so the caller can simply retry: nothing is left half-created.
  try {
    const input: ContractWorkflowInput = { contractId: contract.id };
    await temporal.workflow.start('contractWorkflow', {
      workflowId: contractWorkflowId(contract.id),
      taskQueue,
      args: [input],
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      typedSearchAttributes: [
        { key: CustomerIdKey, value: customer.id },
        { key: ContractIdKey, value: contract.id },
        { key: LifecycleStateKey, value: contract.terms.trial_spec ? 'TRIAL' : 'ACTIVE' },
      ],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) {
      await orm.em.fork().transactional(async (tx) => {
        await tx.execute('delete from gated_commit where contract_id = ?', [contract.id]);
        await tx.nativeDelete(BalanceGrant, { contractId: contract.id });
        await tx.nativeDelete(Contract, { id: contract.id });
        // The old contract ends as it did before (unless changed since), and is not told of it.
        if (transition && fromBefore) {
          await tx.execute('update contract set ending_before = ? where id = ? and ending_before = ?', [fromBefore.endingBefore, transition.from_contract_id, contract.startingAt]);
          if (!fromBefore.hadTell && fromTell) await clearContractTell(tx, transition.from_contract_id, fromTell);
        }
      });
      throw new UnavailableError(`could not start the contract workflow (nothing was stored, retry): ${(err as Error).message}`);
    }
  }
  // Payment-gated commits: their payment starts now (the outbound loop starts any this misses).
  for (const g of grants.filter((x) => gates.has(x.id))) {
    try {
      await startCommitPayment(temporal, taskQueue, { grantId: g.id, contractId: contract.id, customerId: customer.id });
      await markGatedCommitStarted(orm.em.fork(), g.id);
    } catch {
      // left for the outbound loop
    }
  }
  if (transition && fromTell) await tellContractWorkflowOrLeaveQueued(temporal, taskQueue, orm.em.fork(), transition.from_contract_id, fromTell);
  return { id: contract.id, customerId: customer.id };
}
