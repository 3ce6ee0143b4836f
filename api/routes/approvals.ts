import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { changePercent } from '../../billing/approval-policy.js';
import { jsonDecimal } from '../../billing/money.js';
import { pendingApprovals } from '../../db/approvals.js';
import type { LifecycleSettings } from '../../stack/config.js';
import { allow } from '../auth.js';

const DAY_MS = 86_400_000;

/**
 * Finance's approval queue: every frozen invoice waiting for a decision (pending, or rejected and
 * waiting for its re-frozen total to be approved), oldest first, with the previous period's
 * total and the change from it — the same figures the approval decision used.
 */
export function approvalsRouter(orm: MikroORM, settings: LifecycleSettings): Router {
  const r = Router();

  r.get('/v1/accrue/invoices/pending-approval', allow('finance'), async (_req, res) => {
    const now = Date.now();
    const rows = await pendingApprovals(orm.em.fork(), settings);
    res.json({
      data: rows.map((row) => {
        const pct = row.previous_total !== null ? changePercent(row.total, row.previous_total) : undefined;
        return {
          invoice_id: row.invoice_id,
          customer_id: row.customer_id,
          customer_name: row.customer_name,
          contract_id: row.contract_id,
          start_timestamp: row.period_start,
          end_timestamp: row.period_end,
          total: jsonDecimal(row.total),
          previous_total: row.previous_total !== null ? jsonDecimal(row.previous_total) : null,
          change_percent: pct !== undefined ? jsonDecimal(pct) : null,
          approval_status: row.approval_status,
          waiting_since: row.waiting_since,
          days_waiting: Math.max(0, Math.floor((now - Date.parse(row.waiting_since)) / DAY_MS)),
        };
      }),
    });
  });

  return r;
}
