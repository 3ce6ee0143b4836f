import type { EntityManager } from '@mikro-orm/postgresql';
import { log } from '@temporalio/activity';
import { UnavailableError } from '../billing/errors.js';
import { EMAIL_ACTIVITY_TIMEOUT_MS } from '../integrations/email/limits.js';
import type { Mailer, OutgoingMail } from '../integrations/email/mailer.js';

/**
 * Sends one message once per key (invariant I4), recorded before and after the SMTP send in
 * `table`, whose rows are (key columns…, recipient, message_id, status SENDING|SENT, attempts,
 * started_at, sent_at) with the key columns as primary key — like `invoice_email`, without its
 * SKIPPED. No transaction is held across the send:
 * - no row: claim it (SENDING), send, record SENT;
 * - SENT: nothing is sent again;
 * - SENDING younger than the email activity's timeout: a send may be in flight — refuse,
 *   retryably, send nothing;
 * - SENDING older: send again with the same Message-ID (the at-least-once boundary).
 *
 * `table` and the key column names are Accrue's constants, never input.
 */
export async function sendOnce(em: EntityManager, mailer: Mailer, mail: OutgoingMail, record: { table: string; key: Record<string, string | number> }): Promise<{ sent: boolean; reason?: string }> {
  const cols = Object.keys(record.key);
  const values = Object.values(record.key);
  const where = cols.map((c) => `${c} = ?`).join(' and ');
  const [claim] = await em.execute<{ attempts: number }[]>(`
    insert into ${record.table} as e (${cols.join(', ')}, recipient, message_id, status, attempts, started_at) values (${cols.map(() => '?').join(', ')}, ?, ?, 'SENDING', 1, now())
    on conflict (${cols.join(', ')}) do update set attempts = e.attempts + 1, started_at = now()
      where e.status = 'SENDING' and e.started_at < now() - make_interval(secs => ?)
    returning attempts`, [...values, mail.to, mail.messageId, EMAIL_ACTIVITY_TIMEOUT_MS / 1000]);
  if (!claim) {
    const [row] = await em.execute<{ status: string; started_at: Date }[]>(`select status, started_at from ${record.table} where ${where}`, values);
    if (row?.status === 'SENT') return { sent: false, reason: 'already sent' };
    throw new UnavailableError(`${record.table} ${values.join('/')} may still be in flight (started ${String(row?.started_at)}); it is sent again only once that attempt has timed out`);
  }
  if (claim.attempts > 1) log.warn('resending a message whose earlier send was not recorded (at-least-once)', { table: record.table, key: record.key, attempts: claim.attempts });
  await mailer.send(mail);
  await em.execute(`update ${record.table} set status = 'SENT', sent_at = now() where ${where}`, values);
  return { sent: true };
}
