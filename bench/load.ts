import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';

/**
 * The ingest load generator, run as its own process so it never shares an event loop with the
 * API. It sends pre-built batches of 100 realistic events (many customers, group keys, 10 %
 * duplicate retries, 5 % late events) over keep-alive connections, at full speed or at a paced
 * rate, and reports what it sent and what it expects the totals to be.
 *
 * argv: JSON { targets, token, seconds, concurrency, ratePerSec?, customers, seed, prefix }
 */
interface LoadConfig {
  targets: string[];
  token: string;
  seconds: number;
  concurrency: number;
  /** Events per second to pace at; full speed when absent. */
  ratePerSec?: number;
  customers: number;
  seed: number;
  prefix: string;
}

const cfg = JSON.parse(process.argv[2]!) as LoadConfig;
// mulberry32: small, seedable, and uniform enough that every customer gets traffic.
let x = cfg.seed >>> 0;
const rnd = () => {
  x = (x + 0x6d2b79f5) >>> 0;
  let t = x;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const MODELS = ['gpt-large', 'gpt-small', 'embed'];
const REGIONS = ['us-east', 'eu-west', 'ap-south'];

let eventCounter = 0;
const recent: string[] = [];

function batch(): string {
  const now = Date.now();
  const events: unknown[] = [];
  for (let i = 0; i < 100; i++) {
    if (recent.length > 200 && rnd() < 0.1) {
      events.push(JSON.parse(recent[Math.floor(rnd() * recent.length)]!)); // a client retry: duplicate
      continue;
    }
    const customer = `${cfg.prefix}-c${Math.floor(rnd() * cfg.customers)}`;
    const late = rnd() < 0.05;
    const ts = new Date(now - (late ? 3_600_000 * (1 + Math.floor(rnd() * 20)) : Math.floor(rnd() * 60_000))).toISOString();
    const milli = BigInt(Math.floor(rnd() * 2_000_000));
    const tokens = `${milli / 1000n}.${String(milli % 1000n).padStart(3, '0')}`;
    const e = {
      transaction_id: `${cfg.prefix}-${cfg.seed}-${eventCounter++}`,
      customer_id: customer,
      event_type: 'llm_call',
      timestamp: ts,
      properties: { tokens, model: MODELS[Math.floor(rnd() * 3)], region: REGIONS[Math.floor(rnd() * 3)], request_id: `r${eventCounter}` },
    };
    const text = JSON.stringify(e);
    if (recent.length < 2000) recent.push(text);
    else recent[Math.floor(rnd() * 2000)] = text;
    events.push(e);
  }
  return JSON.stringify(events);
}

const errorCodes: string[] = [];
let retried = 0;
const agent = new Agent({ keepAlive: true, maxSockets: cfg.concurrency });
function post(target: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const url = new URL('/v1/ingest', target);
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent, headers: {
      'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${cfg.token}`,
    } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    // A connection error is a failed request (reported by its code), not the end of the run.
    req.on('error', (err: NodeJS.ErrnoException) => resolve(-1 * (errorCodes.push(err.code ?? err.message), 1)));
    req.end(body);
  });
}

// Pre-build the batches so generating JSON does not compete with sending it.
const maxBatches = Math.ceil(((cfg.ratePerSec ?? 150_000) * cfg.seconds) / 100) + cfg.concurrency;
const bodies: string[] = Array.from({ length: maxBatches }, batch);
const latencies: number[] = [];
const statuses: number[] = [];
let sent = 0;
let failed = 0;
const start = Date.now();
const deadline = start + cfg.seconds * 1000;
let next = 0;

async function lane(id: number): Promise<void> {
  for (;;) {
    const i = next++;
    if (i >= bodies.length || Date.now() >= deadline) return;
    if (cfg.ratePerSec) {
      const due = start + (i * 100 * 1000) / cfg.ratePerSec;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    const t0 = performance.now();
    let status = await post(cfg.targets[(i + id) % cfg.targets.length]!, bodies[i]!);
    // A lost connection leaves the outcome unknown: send the same batch again, as an idempotent
    // client does (transaction_ids make the retry safe), so the expected totals stay exact.
    for (let attempt = 1; status === -1 && attempt < 5; attempt++) {
      retried++;
      status = await post(cfg.targets[(i + id + attempt) % cfg.targets.length]!, bodies[i]!);
    }
    latencies.push(performance.now() - t0);
    statuses[i] = status;
    if (status === 200) sent++;
    else failed++;
  }
}

/** CPU seconds the whole machine spent busy (every process and the kernel), from /proc/stat. */
const machineBusy = () => {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]!) / 100;
};
const machine0 = machineBusy();
const cpu0 = process.cpuUsage();
await Promise.all(Array.from({ length: cfg.concurrency }, (_, i) => lane(i)));
const elapsed = (Date.now() - start) / 1000;
const cpu = process.cpuUsage(cpu0);
const machineCpuSeconds = machineBusy() - machine0;
// Expected totals per customer alias over the unique events of the batches sent, in integer
// milli-tokens (values have at most 3 decimals) so the check is exact.
const sentBodies = bodies.filter((_, i) => statuses[i] === 200);
const sentExpected = new Map<string, bigint>();
const seen = new Set<string>();
for (const body of sentBodies) {
  for (const e of JSON.parse(body) as { transaction_id: string; customer_id: string; properties: { tokens: string } }[]) {
    if (seen.has(e.transaction_id)) continue;
    seen.add(e.transaction_id);
    const [w, f = ''] = e.properties.tokens.split('.');
    sentExpected.set(e.customer_id, (sentExpected.get(e.customer_id) ?? 0n) + BigInt(w!) * 1000n + BigInt(f.padEnd(3, '0')));
  }
}
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? 0;
process.stdout.write(JSON.stringify({
  requests: sent, failed, failedStatuses: [...new Set(statuses.filter((s) => s !== 200))], connectionErrors: [...new Set(errorCodes)], connectionErrorCount: errorCodes.length, retried, events: sent * 100, uniqueEvents: seen.size, seconds: elapsed,
  eventsPerSec: (sent * 100) / elapsed, p50: pct(50), p99: pct(99), cpuSeconds: (cpu.user + cpu.system) / 1e6, prebuildCpuSeconds: (cpu0.user + cpu0.system) / 1e6, machineCpuSeconds,
  expected: Object.fromEntries([...sentExpected].map(([k, v]) => [k, v.toString()])),
}));
agent.destroy();
