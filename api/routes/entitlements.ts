import { Router } from 'express';
import { ValidationError } from '../../billing/errors.js';
import { UUID_RE } from '../../db/ids.js';
import { allow } from '../auth.js';
import type { EntitlementsCache } from '../entitlements-cache.js';

/**
 * `GET /v1/accrue/customers/{id}/entitlements` (read, ingest or finance): which products the
 * customer may use now and why (billing/entitlements.ts), answered from memory.
 */
export function entitlementsRouter(cache: EntitlementsCache): Router {
  const r = Router();
  r.get('/v1/accrue/customers/:customer_id/entitlements', allow('read', 'ingest', 'finance'), async (req, res) => {
    const id = String(req.params.customer_id).toLowerCase();
    if (!UUID_RE.test(id)) throw new ValidationError('customer_id', 'must be a customer id (UUID)');
    const { view, cached } = await cache.get(id);
    res.setHeader('x-accrue-cache', cached ? 'hit' : 'miss').json(view);
  });
  return r;
}
