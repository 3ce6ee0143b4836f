import { Agent, request } from 'node:http';

/**
 * The entitlement-check load client of `npm run bench:alerts`, in a process of its own so its
 * bookkeeping does not sit in the measured latencies: GET /v1/accrue/customers/{id}/entitlements
 * at `rps` for `seconds` over `ids`, latencies kept in preallocated arrays (little garbage, so
 * little GC of its own), summary on stdout as JSON.
 */
const args = JSON.parse(process.argv[2]!) as { base: string; token: string; ids: string[]; rps: number; seconds: number; warmupSeconds: number };
const agent = new Agent({ keepAlive: true, maxSockets: 32 });
const url = new URL(args.base);
const paths = args.ids.map((id) => `/v1/accrue/customers/${id}/entitlements`);
const headers = { authorization: `Bearer ${args.token}` };

function run(seconds: number, record: boolean): Promise<{ lat: Float64Array; server: Float64Array; n: number; hits: number; bad: number; seconds: number }> {
  const cap = Math.ceil(args.rps * seconds) + 16;
  const lat = new Float64Array(cap);
  const server = new Float64Array(cap);
  let n = 0;
  let hits = 0;
  let bad = 0;
  let sent = 0;
  let done = 0;
  const t0 = performance.now();
  return new Promise((resolve) => {
    const finish = () => resolve({ lat, server, n, hits, bad, seconds: (performance.now() - t0) / 1000 });
    const one = (k: number) => {
      const start = performance.now();
      const req = request({ host: url.hostname, port: url.port, path: paths[(k * 7919) % paths.length], agent, headers }, (res) => {
        const timing = res.headers['server-timing'];
        const cached = res.headers['x-accrue-cache'] === 'hit';
        const status = res.statusCode;
        res.resume();
        res.on('end', () => {
          if (record && n < cap) {
            lat[n] = performance.now() - start;
            server[n] = Number(/dur=([\d.]+)/.exec(String(timing ?? ''))?.[1] ?? NaN);
            n++;
            if (cached) hits++;
          }
          if (status !== 200) bad++;
          if (++done === sent && performance.now() - t0 >= seconds * 1000) finish();
        });
      });
      req.on('error', () => { bad++; if (++done === sent && performance.now() - t0 >= seconds * 1000) finish(); });
      req.end();
    };
    const tick = () => {
      const due = Math.floor(((performance.now() - t0) / 1000) * args.rps);
      while (sent < due && performance.now() - t0 < seconds * 1000) one(sent++);
      if (performance.now() - t0 < seconds * 1000) setTimeout(tick, 1);
      else if (done === sent) finish();
    };
    tick();
  });
}

const pct = (xs: Float64Array, n: number, p: number) => {
  const sorted = Array.from(xs.subarray(0, n)).filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};

await run(args.warmupSeconds, false);
const cpu0 = process.cpuUsage();
const r = await run(args.seconds, true);
const cpu = process.cpuUsage(cpu0);
process.stdout.write(JSON.stringify({
  requests: r.n, seconds: r.seconds, hits: r.hits, bad: r.bad, cpuSeconds: (cpu.user + cpu.system) / 1e6,
  p50: pct(r.lat, r.n, 50), p99: pct(r.lat, r.n, 99), serverP50: pct(r.server, r.n, 50), serverP99: pct(r.server, r.n, 99),
}));
agent.destroy();
