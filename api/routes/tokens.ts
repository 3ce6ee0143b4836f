import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createToken, TOKEN_SCOPES } from '../../db/tokens.js';
import { allow } from '../auth.js';
import { objectAt, oneOf, reqStr } from '../../operations/input/validate.js';

/** Accrue endpoint: an admin mints a scoped API token; its plaintext is returned once, never stored. */
export function tokensRouter(orm: MikroORM): Router {
  const r = Router();
  r.post('/v1/accrue/tokens', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['name', 'scope']);
    const name = reqStr(body, 'name', '', 200);
    const scope = oneOf(body, 'scope', TOKEN_SCOPES)!;
    const token = await createToken(orm.em.fork(), name, scope);
    res.json({ data: { name, scope, token } });
  });
  return r;
}
