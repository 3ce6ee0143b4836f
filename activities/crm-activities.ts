import { createHash } from 'node:crypto';
import { ApplicationFailure, CancelledFailure, Context, log } from '@temporalio/activity';
import pg from 'pg';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { Client as HubSpot } from '@hubspot/api-client';
import { createContract } from '../operations/contracts/create-contract.js';
import { AccrueError, ConflictError, NotFoundError, ValidationError } from '../billing/errors.js';
import { changedProperties, CRM_PROPERTY_DEFINITIONS, crmPropertyValues, DEAL_PROPERTIES, dealProblemNote, planContractFromDeal, type DealProblem } from '../billing/crm.js';
import { contractIdByUniquenessKey, crmFacts, crmLink, crmNoteId, crmTasksDue, lastPushed, recordCrmDeal, recordCrmNote, recordCrmTask, recordPushed, upsertCrmCustomer } from '../db/crm.js';
import { uuidV5 } from '../db/ids.js';
import { describeHubSpotError, hubspotClient, hubspotRetryDelayMs, hubspotStatus, isHubSpotRequestError, isMissingProperty } from '../integrations/hubspot/client.js';
import { CRM_FIELDS, type HubSpotSettings } from '../stack/config.js';
import { crashPoint } from '../workers/failpoints.js';
import { contractWorkflowId, ContractIdKey, CustomerIdKey, LifecycleStateKey } from '../workflows/search-attributes.js';
import { startCrmSync } from '../operations/crm/start-crm-sync.js';
import type { ActivityDeps } from './deps.js';

/** HubSpot's association types (HUBSPOT_DEFINED): note → deal, task → deal. */
const NOTE_TO_DEAL = 214;
const TASK_TO_DEAL = 216;

export interface DealSnapshot {
  dealId: string;
  properties: Record<string, string | null>;
  closedWon: boolean;
  ownerId: string | null;
  company: { id: string; name: string; billingEmail: string | null } | null;
}

export interface CrmPushResult {
  linked: boolean;
  /** HubSpot is off in this Accrue (no token): the sync workflow ends. */
  off: boolean;
  companyWrites: number;
  dealWrites: number;
  tasks: number;
  /** Objects HubSpot refused outright (a deal deleted there…): tried again at the next push. */
  refused: string[];
  /** The operator's intervals, handed to the workflow (workflows never read the environment). */
  syncIntervalMs: number;
  coalesceMs: number;
}

export type DealOutcome =
  | { status: 'CREATED' | 'EXISTS'; customerId: string; contractId: string }
  | { status: 'INVALID'; problems: DealProblem[] };

/**
 * A HubSpot call's failure as Temporal should see it: a 429 retried after HubSpot's Retry-After
 * (`nextRetryDelay`), a 5xx or no answer retried with the activity's backoff, any other 4xx not
 * retried (the same request cannot succeed).
 */
function hubspotFailure(err: unknown, what: string): Error {
  if (err instanceof ApplicationFailure || err instanceof AccrueError) return err;
  const message = `${what}: ${describeHubSpotError(err)}`;
  const delay = hubspotRetryDelayMs(err);
  if (hubspotStatus(err) === 429) return ApplicationFailure.create({ message, type: 'HubSpotRateLimited', ...(delay !== undefined ? { nextRetryDelay: Math.max(delay, 100) } : {}) });
  if (isHubSpotRequestError(err)) return ApplicationFailure.nonRetryable(message, 'HubSpotRequestRefused');
  return ApplicationFailure.retryable(message, 'HubSpotUnavailable');
}

/**
 * One HubSpot call: heartbeats first (a killed worker's attempt is retried within the heartbeat
 * timeout) and stops if Temporal has given up on this attempt, so a late attempt never runs on
 * beside its retry; the call itself times out (integrations/hubspot/client.ts).
 */
async function call<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat(what);
  if (ctx.cancellationSignal.aborted) throw new CancelledFailure(`attempt cancelled before ${what}`);
  try {
    return await fn();
  } catch (err) {
    throw hubspotFailure(err, what);
  }
}

/** A full push (every value, not only changes) at least this often: HubSpot edits by hand are overwritten. */
const FULL_PUSH_MS = 86_400_000;

/**
 * Runs `fn` holding a PostgreSQL session lock on `key`, on a connection of its own (no
 * transaction held open across HubSpot calls): an attempt Temporal gave up on but that still runs
 * (a worker cut off from Temporal, not from PostgreSQL) and its retry never work on one customer or
 * deal at once — the second is refused and retried. A dead worker's connection, and its lock, go.
 */
async function withCrmLock<T>(databaseUrl: string, key: string, fn: () => Promise<T>): Promise<T> {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    const { rows } = await db.query<{ ok: boolean }>('select pg_try_advisory_lock(hashtextextended($1, 0)) as ok', [`accrue:crm:${key}`]);
    if (!rows[0]?.ok) throw ApplicationFailure.retryable(`another attempt is still working on ${key}; retried`, 'CrmBusy');
    return await fn();
  } finally {
    await db.end().catch(() => {});
  }
}

/** A marker hidden in the notes and tasks Accrue writes: a retried create finds its earlier one. */
const markerOf = (kind: string, key: string) => `accrue:${kind}:${createHash('sha256').update(key).digest('hex').slice(0, 20)}`;

export function createCrmActivities({ orm, hubspot, stripe }: ActivityDeps) {
  const settings: HubSpotSettings | undefined = hubspot;
  const databaseUrl = orm.config.get('clientUrl')!;
  const client = hubspotClient(settings);
  const need = (): HubSpot => {
    if (!client || !settings) throw ApplicationFailure.nonRetryable('HubSpot is off in this Accrue (HUBSPOT_ACCESS_TOKEN is not set)', 'HubSpotOff');
    return client;
  };
  /** Properties known to exist on HubSpot, per object type (checked once per worker process). */
  const ensured = new Map<string, Promise<void>>();

  async function ensureProperties(hs: HubSpot, objectType: 'companies' | 'deals'): Promise<void> {
    let p = ensured.get(objectType);
    if (!p) {
      p = (async () => {
        const existing = new Set((await call(`reading ${objectType} properties`, () => hs.crm.properties.coreApi.getAll(objectType))).results.map((x) => x.name));
        const ctx = Context.current();
        for (const field of CRM_FIELDS) {
          const name = settings!.properties[field];
          if (existing.has(name)) continue;
          const def = CRM_PROPERTY_DEFINITIONS[field];
          ctx.heartbeat(`creating ${objectType} property ${name}`);
          try {
            await hs.crm.properties.coreApi.create(objectType, {
              name, label: def.label, description: def.description, groupName: objectType === 'companies' ? 'companyinformation' : 'dealinformation',
              type: def.type as never, fieldType: def.fieldType as never,
            });
          } catch (err) {
            if (hubspotStatus(err) !== 409) throw hubspotFailure(err, `creating the ${objectType} property ${name}`); // 409: made meanwhile
          }
        }
      })();
      ensured.set(objectType, p);
      p.catch(() => ensured.delete(objectType));
    }
    await p;
  }

  /** Whether an object associated with the deal already carries this marker (a create retried after a lost answer). */
  async function findMarked(hs: HubSpot, dealId: string, objectType: 'notes' | 'tasks', marker: string): Promise<string | null> {
    const deal = await call(`reading deal ${dealId}`, () => hs.crm.deals.basicApi.getById(dealId, ['dealname'], undefined, [objectType]));
    const ids = ((deal.associations as Record<string, { results?: { id: string }[] }> | undefined)?.[objectType]?.results ?? []).map((r) => r.id);
    const bodyProperty = objectType === 'notes' ? 'hs_note_body' : 'hs_task_body';
    for (const id of [...new Set(ids)]) {
      const o = await call(`reading ${objectType} ${id}`, () => hs.crm.objects[objectType].basicApi.getById(id, [bodyProperty]));
      if ((o.properties[bodyProperty] ?? '').includes(marker)) return id;
    }
    return null;
  }

  async function commitProductId(): Promise<string> {
    if (settings?.commitProductId) return settings.commitProductId;
    const id = uuidV5('accrue:hubspot-prepaid-commit-product');
    await orm.em.fork().execute(`insert into product (id, name, type) values (?, 'Prepaid commit (HubSpot)', 'FIXED') on conflict (id) do nothing`, [id]);
    return id;
  }

  return {
    /** The deal (Accrue's properties, stage, owner) and its company with the billing email to use. */
    async readHubSpotDeal({ dealId }: { dealId: string }): Promise<DealSnapshot> {
      const hs = need();
      const deal = await call(`reading deal ${dealId}`, () => hs.crm.deals.basicApi.getById(dealId, [...DEAL_PROPERTIES], undefined, ['companies', 'contacts']).catch((err: unknown) => {
        if (hubspotStatus(err) === 404) throw ApplicationFailure.nonRetryable(`HubSpot has no deal ${dealId}`, 'DealNotFound');
        throw err;
      }));
      const assoc = (deal.associations ?? {}) as Record<string, { results?: { id: string; type?: string }[] }>;
      const companies = assoc.companies?.results ?? [];
      // The primary company (v3 names its association type deal_to_company; others are
      // deal_to_company_unlabeled or labelled); otherwise the first.
      const companyId = (companies.find((c) => c.type === 'deal_to_company') ?? companies[0])?.id;
      let company: DealSnapshot['company'] = null;
      if (companyId) {
        const c = await call(`reading company ${companyId}`, () => hs.crm.companies.basicApi.getById(companyId, ['name', 'domain', 'accrue_billing_email'], undefined, ['contacts']));
        let billingEmail = c.properties.accrue_billing_email?.trim() || null;
        if (!billingEmail) {
          // The primary contact: the deal's first contact, else the company's.
          const contacts = [...(assoc.contacts?.results ?? []), ...(((c.associations ?? {}) as typeof assoc).contacts?.results ?? [])];
          for (const contact of contacts) {
            const p = await call(`reading contact ${contact.id}`, () => hs.crm.contacts.basicApi.getById(contact.id, ['email']));
            if (p.properties.email?.trim()) {
              billingEmail = p.properties.email.trim();
              break;
            }
          }
        }
        company = { id: companyId, name: c.properties.name?.trim() || c.properties.domain?.trim() || `HubSpot company ${companyId}`, billingEmail };
      }
      const properties = Object.fromEntries(DEAL_PROPERTIES.map((k) => [k, deal.properties[k] ?? null]));
      return { dealId, properties, closedWon: properties.dealstage === settings!.closedWonStage, ownerId: properties.hubspot_owner_id?.trim() || null, company };
    },

    /**
     * The deal's customer (created or updated) and contract, created once: the contract's
     * uniqueness_key is `hubspot-deal-<deal id>`, so a retried activity, a second run of the
     * workflow or a redelivered webhook finds the contract it made before. Problems with the
     * deal's properties are returned (each naming the property), not thrown, so the workflow can
     * note them on the deal.
     */
    async createContractFromDeal({ deal }: { deal: DealSnapshot }): Promise<DealOutcome> {
      const uniquenessKey = `hubspot-deal-${deal.dealId}`;
      const em = orm.em.fork();
      const link = async (contract: { id: string; customerId: string }, status: 'CREATED' | 'EXISTS'): Promise<DealOutcome> => {
        await recordCrmDeal(em, { dealId: deal.dealId, customerId: contract.customerId, contractId: contract.id, companyId: deal.company?.id ?? '', ownerId: deal.ownerId });
        return { status, customerId: contract.customerId, contractId: contract.id };
      };
      const existing = await contractIdByUniquenessKey(em, uniquenessKey);
      if (existing) {
        await ensureContractWorkflow(Context.current().client, Context.current().info.taskQueue, existing);
        return link(existing, 'EXISTS');
      }
      const planned = planContractFromDeal(deal.dealId, deal.properties);
      const problems = 'problems' in planned ? [...planned.problems] : [];
      if (!deal.company) problems.push({ property: 'company', message: 'the deal has no associated company: associate the customer\'s company with the deal' });
      if (problems.length || !('plan' in planned)) return { status: 'INVALID', problems };
      const plan = planned.plan;
      const { customerId } = await upsertCrmCustomer(em, { companyId: deal.company!.id, name: deal.company!.name, billingEmail: deal.company!.billingEmail });
      const body: Record<string, unknown> = {
        customer_id: customerId, starting_at: plan.startingAt, name: plan.name, uniqueness_key: uniquenessKey,
        ...('id' in plan.rateCard ? { rate_card_id: plan.rateCard.id } : { rate_card_alias: plan.rateCard.alias }),
        ...(plan.endingBefore ? { ending_before: plan.endingBefore } : {}),
        ...(plan.trialDays ? { trial_spec: { length_in_days: plan.trialDays } } : {}),
        ...(plan.renewalNoticeDays !== undefined ? { renewal_notice_days: plan.renewalNoticeDays } : {}),
        ...(plan.netPaymentTermsDays !== undefined ? { net_payment_terms_days: plan.netPaymentTermsDays } : {}),
        ...(plan.commitCents ? {
          commits: [{
            type: 'PREPAID', product_id: await commitProductId(), name: `${plan.name} prepaid commit`,
            access_schedule: { schedule_items: [{ amount: plan.commitCents, starting_at: plan.startingAt, ending_before: plan.endingBefore }] },
            invoice_schedule: { schedule_items: [{ amount: plan.commitCents, timestamp: plan.startingAt }] },
          }],
        } : {}),
      };
      const ctx = Context.current();
      try {
        const created = await createContract({ orm, temporal: ctx.client, taskQueue: ctx.info.taskQueue, stripe }, body);
        crashPoint('@crm-contract-created');
        return await link(created, 'CREATED');
      } catch (err) {
        if (err instanceof ConflictError && /uniqueness_key/.test(err.message)) {
          const made = await contractIdByUniquenessKey(em, uniquenessKey);
          if (made) return link(made, 'EXISTS');
        }
        const field = err instanceof ValidationError ? err.field : err instanceof NotFoundError ? err.field : undefined;
        if (field !== undefined) return { status: 'INVALID', problems: [{ property: dealPropertyOf(field), message: err instanceof NotFoundError ? err.message : (err as Error).message.replace(/^[^:]+: /, '') }] };
        throw err;
      }
    },

    /** A note on the deal saying what is wrong with it: once per distinct set of problems. */
    async noteOnHubSpotDeal({ dealId, problems }: { dealId: string; problems: DealProblem[] }): Promise<{ noteId: string; created: boolean }> {
      const hs = need();
      return withCrmLock(databaseUrl, `deal:${dealId}`, async () => {
      const body = dealProblemNote(problems);
      const marker = markerOf('deal-note', `${dealId}\n${body}`);
      const em = orm.em.fork();
      const known = await crmNoteId(em, dealId, marker);
      if (known) return { noteId: known, created: false };
      const found = await findMarked(hs, dealId, 'notes', marker);
      if (found) {
        await recordCrmNote(em, dealId, marker, found);
        return { noteId: found, created: false };
      }
      const note = await call(`noting on deal ${dealId}`, () => hs.crm.objects.notes.basicApi.create({
        properties: { hs_note_body: `${body}\n\n(${marker})`, hs_timestamp: new Date().toISOString() },
        associations: [{ to: { id: dealId }, types: [{ associationCategory: 'HUBSPOT_DEFINED' as never, associationTypeId: NOTE_TO_DEAL }] }],
      }));
      crashPoint('@crm-note-created');
      await recordCrmNote(em, dealId, marker, note.id);
      return { noteId: note.id, created: true };
      });
    },

    /** Starts (or tells) `crm-sync/<customer>` so the new contract shows on the company and the deal. */
    async startCrmSyncFor({ customerId, reason }: { customerId: string; reason: string }): Promise<void> {
      const ctx = Context.current();
      await startCrmSync(ctx.client, ctx.info.taskQueue, customerId, reason);
    },

    /**
     * Writes the customer's billing facts to its company and each deal's contract's facts to the
     * deal — only the properties whose value differs from what was last written there — and
     * makes the tasks due for deal owners (renewal notice, arrears), each once. Properties
     * missing on HubSpot are created first. A worker killed anywhere here is harmless: writes
     * are absolute values (a rewrite is the same write) and tasks carry a marker found on retry.
     */
    async pushCrmState({ customerId }: { customerId: string }): Promise<CrmPushResult> {
      if (!client || !settings) return { linked: false, off: true, companyWrites: 0, dealWrites: 0, tasks: 0, refused: [], syncIntervalMs: 0, coalesceMs: 0 };
      const hs = client;
      const intervals = { syncIntervalMs: settings.syncIntervalMs, coalesceMs: settings.coalesceMs };
      const em = orm.em.fork();
      const link = await crmLink(em, customerId);
      if (!link) return { linked: false, off: false, companyWrites: 0, dealWrites: 0, tasks: 0, refused: [], ...intervals };
      return withCrmLock(databaseUrl, `customer:${customerId}`, async () => {
      await ensureProperties(hs, 'companies');
      if (link.deals.length) await ensureProperties(hs, 'deals');
      const now = new Date();
      const facts = await crmFacts(em, customerId, link.deals.map((d) => d.contractId), now);
      let companyWrites = 0;
      let dealWrites = 0;
      // Each object on its own: one HubSpot refuses (a deal deleted there, an owner who left)
      // does not hold up the others; the refusals are reported at the end. Transient failures
      // (429, 5xx, no answer) fail the attempt at once: Temporal retries it, and writes repeat harmlessly.
      const refused: string[] = [];
      const each = async (what: string, fn: () => Promise<void>) => {
        try {
          await fn();
        } catch (err) {
          if (!(err instanceof ApplicationFailure) || err.type !== 'HubSpotRequestRefused') throw err;
          refused.push(err.message);
          log.warn('HubSpot refused a CRM update; the others go on', { customerId, what, error: err.message });
        }
      };
      const write = async (objectType: 'companies' | 'deals', objectId: string, values: Record<string, string>) => {
        const last = await lastPushed(em, objectType, objectId);
        const full = !last || now.getTime() - last.fullPushedAt.getTime() >= FULL_PUSH_MS;
        const changed = full ? values : changedProperties(values, last.properties);
        if (!Object.keys(changed).length) return false;
        const api = objectType === 'companies' ? hs.crm.companies.basicApi : hs.crm.deals.basicApi;
        await call(`updating ${objectType} ${objectId}`, () => api.update(objectId, { properties: changed }).catch((err: unknown) => {
          if (!isMissingProperty(err)) throw err;
          // A property deleted on HubSpot since Accrue made it: made again on the retry.
          ensured.delete(objectType);
          throw ApplicationFailure.retryable(`${objectType} ${objectId}: ${describeHubSpotError(err)}; the property is made again on the retry`, 'HubSpotPropertyMissing');
        }));
        crashPoint('@crm-pushed');
        await recordPushed(em, objectType, objectId, changed, full);
        return true;
      };
      await each(`company ${link.companyId}`, async () => {
        if (await write('companies', link.companyId, crmPropertyValues(facts.company, settings!.properties))) companyWrites++;
      });
      for (const d of link.deals) {
        const f = facts.contracts.get(d.contractId);
        if (f) {
          await each(`deal ${d.dealId}`, async () => {
            if (await write('deals', d.dealId, crmPropertyValues(f, settings!.properties))) dealWrites++;
          });
        }
      }
      let tasks = 0;
      for (const t of await crmTasksDue(em, customerId, now)) {
        await each(`task ${t.key} on deal ${t.dealId}`, async () => {
          const marker = markerOf('task', `${t.contractId}:${t.key}`);
          let taskId = await findMarked(hs, t.dealId, 'tasks', marker);
          if (!taskId) {
            const subject = t.kind === 'renewal_notice' ? 'Renewal coming up: talk to the customer' : 'Customer in arrears: an invoice is overdue';
            const create = (owner: string | null) => hs.crm.objects.tasks.basicApi.create({
              properties: {
                hs_task_subject: subject, hs_task_status: 'NOT_STARTED', hs_task_priority: t.kind === 'arrears_entered' ? 'HIGH' : 'MEDIUM', hs_timestamp: t.at,
                hs_task_body: `${t.reason} (Accrue contract ${t.contractId}).\n\n(${marker})`,
                ...(owner ? { hubspot_owner_id: owner } : {}),
              },
              associations: [{ to: { id: t.dealId }, types: [{ associationCategory: 'HUBSPOT_DEFINED' as never, associationTypeId: TASK_TO_DEAL }] }],
            });
            // An owner HubSpot no longer knows: the task is made without one rather than not at all.
            const task = await call(`creating a task on deal ${t.dealId}`, () => create(t.ownerId).catch((err: unknown) => {
              if (t.ownerId && hubspotStatus(err) === 400 && /owner/i.test(JSON.stringify((err as { body?: unknown }).body ?? ''))) return create(null);
              throw err;
            }));
            taskId = task.id;
            tasks++;
            crashPoint('@crm-task-created');
          }
          await recordCrmTask(em, { contractId: t.contractId, key: t.key, dealId: t.dealId, kind: t.kind, taskId });
        });
      }
      if (companyWrites || dealWrites || tasks) log.info('CRM updated', { customerId, companyWrites, dealWrites, tasks });
      return { linked: true, off: false, companyWrites, dealWrites, tasks, refused, ...intervals };
      });
    },
  };
}

/** Which deal property a contract-create error comes from (the deal's owner fixes that one). */
function dealPropertyOf(field: string): string {
  if (field.startsWith('rate_card')) return 'accrue_rate_card';
  if (field.startsWith('starting_at')) return 'accrue_start_date';
  if (field.startsWith('ending_before')) return 'accrue_term_months';
  if (field.startsWith('trial_spec')) return 'accrue_trial_days';
  if (field.startsWith('renewal_notice_days')) return 'accrue_renewal_notice_days';
  if (field.startsWith('net_payment_terms_days')) return 'accrue_net_payment_terms_days';
  if (field.startsWith('commits')) return 'accrue_commit_amount';
  if (field.startsWith('customer_id')) return 'company';
  return field;
}

/** The contract's workflow, started if a worker died between writing the contract and starting it. */
async function ensureContractWorkflow(client: Context['client'], taskQueue: string, c: { id: string; customerId: string }): Promise<void> {
  try {
    await client.workflow.start('contractWorkflow', {
      workflowId: contractWorkflowId(c.id), taskQueue, args: [{ contractId: c.id }], workflowIdReusePolicy: 'REJECT_DUPLICATE',
      typedSearchAttributes: [{ key: CustomerIdKey, value: c.customerId }, { key: ContractIdKey, value: c.id }, { key: LifecycleStateKey, value: 'ACTIVE' }],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}
