import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createContract } from '../../operations/contracts/create-contract.js';
import type { Client } from '../../operations/workflow-client.js';
import type { StripeSettings } from '../../stack/config.js';
import { allow } from '../auth.js';

export function contractsRouter(orm: MikroORM, temporal: Client, taskQueue: string, stripe?: StripeSettings): Router {
  const r = Router();

  r.post('/v1/contracts/create', allow(), async (req, res) => {
    const { id } = await createContract({ orm, temporal, taskQueue, stripe }, req.body);
    res.json({ data: { id } });
  });

  return r;
}
