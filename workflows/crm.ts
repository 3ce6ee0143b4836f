import {
  ApplicationFailure, condition, continueAsNew, defineQuery, defineSignal, log, proxyActivities, setHandler, sleep, workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { CrmPushResult, DealOutcome } from '../activities/crm-activities.js';

/**
 * HubSpot both ways (issue 12). Every HubSpot call is an activity retried by Temporal without
 * limit: after HubSpot's Retry-After on a 429, with backoff (up to 5 minutes apart) on a 5xx or
 * no answer; a request HubSpot refuses outright (another 4xx) is not retried.
 */
const retry = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '5 minutes', nonRetryableErrorTypes: ['HubSpotRequestRefused', 'HubSpotOff', 'DealNotFound'] };
/** Activities calling HubSpot heartbeat before every call, so a killed worker's attempt is retried within 30 s. */
const hubspot = proxyActivities<Activities>({ startToCloseTimeout: '5 minutes', heartbeatTimeout: '30 seconds', retry });
/** Accrue's own steps (the contract, the sync's start). */
const accrue = proxyActivities<Activities>({ startToCloseTimeout: '1 minute', retry });

/** The deal changed again (another webhook) while its run was going: read it again before giving up. */
export const dealChangedSignal = defineSignal('dealChanged');

/**
 * `crm-deal/<deal id>`, started (or told, signal `dealChanged`) by HubSpot's webhook when a deal
 * reaches the closed-won stage, is created there, or an Accrue property of it changes: reads the
 * deal and its company, creates or updates the customer and creates the contract once
 * (`uniqueness_key` hubspot-deal-<id>), then starts the customer's CRM sync. A deal that is not
 * closed-won ends the run with nothing done. A deal whose properties cannot make a contract gets
 * a note saying which property is wrong, and the run fails (visible in the Temporal UI as Failed,
 * with the same message) — unless the deal changed meanwhile, then it is read again; saving the
 * fixed deal later starts a new run.
 */
export async function crmDealWorkflow({ dealId }: { dealId: string }): Promise<DealOutcome | { status: 'NOT_CLOSED_WON'; stage: string | null }> {
  let changed = false;
  setHandler(dealChangedSignal, () => {
    changed = true;
  });
  for (let read = 1; ; read++) {
    changed = false;
    const deal = await hubspot.readHubSpotDeal({ dealId });
    if (!deal.closedWon) {
      if (changed && read < 20) continue;
      return { status: 'NOT_CLOSED_WON', stage: deal.properties.dealstage ?? null };
    }
    const outcome = await accrue.createContractFromDeal({ deal });
    if (outcome.status === 'INVALID') {
      // Changed since the read: the problems may be fixed already — read again before noting.
      if (changed && read < 20) continue;
      await hubspot.noteOnHubSpotDeal({ dealId, problems: outcome.problems });
      if (changed && read < 20) continue;
      throw ApplicationFailure.nonRetryable(`deal ${dealId} cannot become a contract: ${outcome.problems.map((p) => `${p.property}: ${p.message}`).join('; ')}`, 'InvalidDeal');
    }
    await accrue.startCrmSyncFor({ customerId: outcome.customerId, reason: `deal ${dealId} closed won` });
    return outcome;
  }
}

/** The customer's billing facts changed (a lifecycle transition, an invoice finalized, a payment). */
export const crmChangedSignal = defineSignal<[{ reason: string }]>('crmChanged');
export const crmSyncStatusQuery = defineQuery<{ pushes: number; lastPush: CrmPushResult | null; dirty: boolean }>('crmSyncStatus');

export interface CrmSyncInput {
  customerId: string;
}

/**
 * `crm-sync/<customer id>`: keeps the customer's HubSpot company and deals current. It pushes when
 * told of a change (signal `crmChanged`, sent for every lifecycle transition, invoice
 * finalization and payment of the customer) — after waiting ACCRUE_HUBSPOT_COALESCE, so a burst
 * of changes is one write — and every ACCRUE_HUBSPOT_SYNC_INTERVAL without one (current-period
 * spend and commit remaining move with every rating pass; this is where they reach the CRM: many
 * passes, one update per interval). Each push writes only properties whose value changed. It ends
 * when the customer is not linked to HubSpot or HubSpot is off, and continues as new now and then.
 */
export async function crmSyncWorkflow(input: CrmSyncInput): Promise<void> {
  let dirty = true; // started because something changed (or to carry on after continue-as-new)
  let pushes = 0;
  let lastPush: CrmPushResult | null = null;
  setHandler(crmChangedSignal, () => {
    dirty = true;
  });
  setHandler(crmSyncStatusQuery, () => ({ pushes, lastPush, dirty }));
  let intervalMs = 3_600_000;
  let coalesceMs = 10_000;
  for (let round = 0; round < 500 && !workflowInfo().continueAsNewSuggested; round++) {
    if (!dirty) await condition(() => dirty, intervalMs);
    if (dirty) await sleep(coalesceMs);
    dirty = false;
    try {
      lastPush = await hubspot.pushCrmState({ customerId: input.customerId });
      pushes++;
    } catch (err) {
      // Refused by HubSpot (a 4xx other than 429): tried again at the next change or interval.
      log.warn('CRM push refused; trying again later', { customerId: input.customerId, error: String((err as Error).message) });
      continue;
    }
    if (lastPush.refused?.length) log.warn('HubSpot refused some CRM updates; tried again at the next push', { customerId: input.customerId, refused: lastPush.refused });
    if (lastPush.off || !lastPush.linked) return;
    intervalMs = lastPush.syncIntervalMs;
    coalesceMs = lastPush.coalesceMs;
  }
  await continueAsNew<typeof crmSyncWorkflow>(input);
}
