import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDurationMs } from '../billing/periods.js';

/** Repository root (dist/stack/config.js and stack/config.ts both sit two levels below it). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).includes('/dist/') ? '../..' : '..');

/** Accrue's Temporal search attributes: registered on the embedded server, set by workflows. */
export const SEARCH_ATTRIBUTES = {
  CustomerId: 'Keyword',
  ContractId: 'Keyword',
  InvoiceId: 'Keyword',
  LifecycleState: 'Keyword',
} as const;

export interface Config {
  databaseUrl: string;
  temporalAddress: string;
  temporalNamespace: string;
  taskQueue: string;
  smtpUrl: string;
  mailFrom: string;
  port: number;
  adminToken?: string;
  invoiceGracePeriodMs: number;
  /** Oldest event timestamp ingest accepts, as an age (Metronome: 34 days). */
  ingestMaxAgeMs: number;
  dataDir: string;
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v) throw new Error(`${name} is not set (npm start sets it for the embedded stack)`);
  return v;
}

/** Process configuration from the environment; API and worker processes read only this. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = Number(env.PORT ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be a port number: ${env.PORT}`);
  return {
    databaseUrl: required(env, 'DATABASE_URL'),
    temporalAddress: required(env, 'TEMPORAL_ADDRESS'),
    temporalNamespace: env.TEMPORAL_NAMESPACE ?? 'default',
    taskQueue: env.ACCRUE_TASK_QUEUE ?? 'accrue',
    smtpUrl: required(env, 'SMTP_URL'),
    mailFrom: env.ACCRUE_MAIL_FROM ?? 'Accrue Billing <billing@accrue.local>',
    port,
    adminToken: env.ACCRUE_ADMIN_TOKEN || undefined,
    invoiceGracePeriodMs: parseDurationMs(env.ACCRUE_INVOICE_GRACE_PERIOD ?? '24h', 'ACCRUE_INVOICE_GRACE_PERIOD'),
    ingestMaxAgeMs: parseDurationMs(env.ACCRUE_INGEST_MAX_AGE ?? '34d', 'ACCRUE_INGEST_MAX_AGE'),
    dataDir: env.ACCRUE_DATA_DIR ?? join(ROOT, '.data'),
  };
}
