import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Failpoints for crash tests: `ACCRUE_FAILPOINTS=recordLifecycleTransition:ENDED,sendNotificationEmail:trial_ended`
 * makes the worker SIGKILL itself right after that activity has done its work and before Temporal
 * hears it completed — the worst moment for exactly-once — when the activity's input has a field
 * equal to the value after the colon (no colon: any call). Each failpoint fires once: it claims a
 * file in `ACCRUE_FAILPOINT_DIR` (required) before killing, so the restarted worker carries on.
 * Unset (always, outside tests), activities are returned untouched. Entries starting with `@`
 * are points inside an activity's code (`crashPoint('@outbound-evaluated')`), for steps that are
 * not activities of their own.
 */
export function withFailpoints<T extends Record<string, unknown>>(activities: T, env: NodeJS.ProcessEnv = process.env): T {
  const spec = env.ACCRUE_FAILPOINTS?.trim();
  if (!spec) return activities;
  const dir = env.ACCRUE_FAILPOINT_DIR;
  if (!dir) throw new Error('ACCRUE_FAILPOINTS needs ACCRUE_FAILPOINT_DIR (where each failpoint records that it fired)');
  mkdirSync(dir, { recursive: true });
  const points = spec.split(',').map((p) => p.trim()).filter((p) => p && !p.startsWith('@')).map((p) => {
    const [name, value] = p.split(':');
    if (!name || !(name in activities)) throw new Error(`ACCRUE_FAILPOINTS: no activity named ${JSON.stringify(name)}`);
    return { id: p, name, value };
  });
  const out: Record<string, unknown> = { ...activities };
  for (const point of points) {
    const previous = out[point.name] as (...args: unknown[]) => Promise<unknown>;
    out[point.name] = async (...args: unknown[]) => {
      const result = await previous(...args);
      const input = args[0];
      const matches = point.value === undefined || (typeof input === 'object' && input !== null && Object.values(input).some((v) => v === point.value));
      if (matches && claim(join(dir, point.id.replace(/[^A-Za-z0-9_.-]/g, '_')))) {
        console.error(`[worker] failpoint ${point.id}: killed after the activity's work, before its completion reached Temporal`);
        process.kill(process.pid, 'SIGKILL');
        await new Promise(() => {}); // never completes
      }
      return result;
    };
  }
  return out as T;
}

/**
 * A failpoint inside an activity: SIGKILLs the worker here, once, when `ACCRUE_FAILPOINTS` lists
 * `id` (which starts with `@`). A no-op otherwise.
 */
export function crashPoint(id: string, env: NodeJS.ProcessEnv = process.env): void {
  const spec = env.ACCRUE_FAILPOINTS;
  if (!spec || !spec.split(',').map((p) => p.trim()).includes(id)) return;
  const dir = env.ACCRUE_FAILPOINT_DIR;
  if (!dir) throw new Error('ACCRUE_FAILPOINTS needs ACCRUE_FAILPOINT_DIR (where each failpoint records that it fired)');
  mkdirSync(dir, { recursive: true });
  if (claim(join(dir, id.replace(/[^A-Za-z0-9_.-]/g, '_')))) {
    console.error(`[worker] failpoint ${id}: killed here`);
    process.kill(process.pid, 'SIGKILL');
  }
}

/** True once per path: the file is created exclusively. */
function claim(path: string): boolean {
  try {
    closeSync(openSync(path, 'wx'));
    return true;
  } catch {
    return false;
  }
}
