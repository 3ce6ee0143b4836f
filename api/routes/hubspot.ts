import express, { Router } from 'express';
import { ConflictError, UnauthorizedError, ValidationError } from '../../billing/errors.js';
import { verifyHubSpotRequest } from '../../integrations/hubspot/client.js';
import type { HubSpotSettings } from '../../stack/config.js';
import { startDealWorkflow } from '../../operations/crm/start-deal-workflow.js';
import type { Client } from '../../operations/workflow-client.js';

interface HubSpotEvent {
  subscriptionType?: unknown;
  objectId?: unknown;
  fromObjectId?: unknown;
  associationType?: unknown;
  propertyName?: unknown;
  propertyValue?: unknown;
}

/** The deals a batch of HubSpot events asks Accrue to look at (the workflow reads each deal itself). */
function dealsToLook(events: HubSpotEvent[], closedWonStage: string): string[] {
  const deals = new Set<string>();
  events.forEach((e, i) => {
    if (typeof e !== 'object' || e === null || typeof e.subscriptionType !== 'string') throw new ValidationError(`[${i}].subscriptionType`, 'is missing: not a HubSpot webhook event');
    if (!e.subscriptionType.startsWith('deal.')) return;
    // A company associated with a deal (what the "no associated company" note asks for).
    const association = e.subscriptionType === 'deal.associationChange';
    if (association && !(typeof e.associationType === 'string' && e.associationType.startsWith('DEAL_TO_COMPANY'))) return;
    const raw = association ? e.fromObjectId : e.objectId;
    const id = typeof raw === 'number' || typeof raw === 'string' ? String(raw) : '';
    if (!/^\d{1,30}$/.test(id)) throw new ValidationError(`[${i}].${association ? 'fromObjectId' : 'objectId'}`, `must be a HubSpot object id, got ${JSON.stringify(raw)}`);
    const closedWon = e.subscriptionType === 'deal.propertyChange' && e.propertyName === 'dealstage' && e.propertyValue === closedWonStage;
    // A fixed Accrue property of a closed-won deal whose contract could not be made: try again.
    const accrueProperty = e.subscriptionType === 'deal.propertyChange' && typeof e.propertyName === 'string' && e.propertyName.startsWith('accrue_');
    if (closedWon || accrueProperty || association || e.subscriptionType === 'deal.creation') deals.add(id);
  });
  return [...deals];
}

/**
 * HubSpot's webhooks: `POST /v1/accrue/webhooks/hubspot`, verified with the v3 signature
 * (`X-HubSpot-Signature-v3` over method + full URI + raw body + `X-HubSpot-Request-Timestamp`,
 * keyed with HUBSPOT_CLIENT_SECRET; the timestamp within 5 minutes): anything else is a 401 and
 * changes nothing. A deal moved to the closed-won stage, created in it, or with an `accrue_*`
 * property changed starts `crm-deal/<deal id>` (a run already going is told, and reads the deal
 * again if it changed after its read; a finished one is run again and finds the contract it made). 200 means every run has started
 * (Temporal holds it); a 503 makes HubSpot deliver again.
 */
export function hubspotWebhooksRouter(temporal: Client, taskQueue: string, settings: HubSpotSettings | undefined): Router {
  const r = Router();
  r.post('/v1/accrue/webhooks/hubspot', express.raw({ type: () => true, limit: '1mb' }), async (req, res) => {
    if (!settings?.accessToken || !settings.clientSecret) throw new ConflictError('HubSpot webhooks are off in this Accrue (HUBSPOT_ACCESS_TOKEN and HUBSPOT_CLIENT_SECRET must both be set)');
    const raw = Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '';
    const uri = `${settings.publicUrl ?? `${req.protocol}://${req.get('host') ?? ''}`}${req.originalUrl}`;
    const refused = verifyHubSpotRequest(settings.clientSecret, {
      method: req.method, uri, body: raw, signature: req.get('x-hubspot-signature-v3'), timestamp: req.get('x-hubspot-request-timestamp'),
    });
    if (refused) throw new UnauthorizedError(`not a HubSpot request: ${refused}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw new ValidationError('body', 'is not JSON');
    }
    const events = (Array.isArray(parsed) ? parsed : [parsed]) as HubSpotEvent[];
    const deals = dealsToLook(events, settings.closedWonStage);
    for (const dealId of deals) {
      await startDealWorkflow(temporal, taskQueue, dealId);
    }
    res.json({ received: events.length, deals });
  });
  return r;
}
