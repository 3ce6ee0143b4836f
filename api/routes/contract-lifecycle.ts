import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { Contract } from '../../db/entities.js';
import { UUID_RE } from '../../db/ids.js';
import { lifecycleView } from '../../db/lifecycle.js';
import { allow } from '../auth.js';

/** A contract's lifecycle: its state, since when, and every transition with its reason (from PostgreSQL). */
export function contractLifecycleRouter(orm: MikroORM): Router {
  const r = Router();
  r.get('/v1/accrue/contracts/:id/lifecycle', allow('read', 'finance'), async (req, res) => {
    const id = String(req.params.id);
    if (!UUID_RE.test(id)) throw new ValidationError('id', 'must be a contract id (UUID)');
    const em = orm.em.fork();
    const contract = await em.findOne(Contract, { id });
    if (!contract) throw new NotFoundError('contract', id, 'id');
    res.json({ data: await lifecycleView(em, contract) });
  });
  return r;
}
