import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hubspotV3Signature } from '../../integrations/hubspot/client.js';

/**
 * A HubSpot-protocol HTTP server for the tests, answering the CRM v3 endpoints Accrue's
 * `@hubspot/api-client` calls with HubSpot's documented shapes and status codes:
 *
 * - `GET /crm/v3/objects/{type}/{id}?properties=…&associations=…` (only the requested properties,
 *   unset ones as null; associations as `{<type>: {results: [{id, type}]}}`), 404 OBJECT_NOT_FOUND
 * - `PATCH /crm/v3/objects/{type}/{id}` — 400 VALIDATION_ERROR (PROPERTY_DOESNT_EXIST) for a
 *   property the object type does not have, as HubSpot answers
 * - `POST /crm/v3/objects/{type}` with `associations` (notes → deal 214, tasks → deal 216)
 * - `GET|POST /crm/v3/properties/{objectType}` — 409 OBJECT_ALREADY_EXISTS for a known name
 * - 401 INVALID_AUTHENTICATION without the right `Authorization: Bearer <token>`
 *
 * It records every request (`requests`), and `fault()` queues answers (429 with Retry-After, 5xx)
 * for requests matching a method and path, before or after doing the work (the answer lost).
 * Tests read and seed its objects directly (it runs in the test's own process).
 */
export interface HubSpotObject {
  id: string;
  properties: Record<string, string | null>;
  createdAt: string;
  updatedAt: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
  status: number;
  at: number;
}

interface Fault {
  method: string;
  path: RegExp;
  status: number;
  count: number;
  retryAfterSeconds?: number;
  when: 'before' | 'after';
}

const OBJECT_TYPES = ['deals', 'companies', 'contacts', 'notes', 'tasks'] as const;
type ObjectType = typeof OBJECT_TYPES[number];

/** Each object type's own properties (HubSpot's defaults plus the custom ones a portal set up for Accrue). */
const BASE_PROPERTIES: Record<ObjectType, string[]> = {
  deals: ['dealname', 'dealstage', 'pipeline', 'amount', 'closedate', 'hubspot_owner_id', 'accrue_rate_card', 'accrue_start_date', 'accrue_term_months', 'accrue_commit_amount', 'accrue_trial_days', 'accrue_renewal_notice_days', 'accrue_net_payment_terms_days'],
  companies: ['name', 'domain', 'accrue_billing_email'],
  contacts: ['email', 'firstname', 'lastname'],
  notes: ['hs_note_body', 'hs_timestamp', 'hubspot_owner_id'],
  tasks: ['hs_task_subject', 'hs_task_body', 'hs_task_status', 'hs_task_priority', 'hs_timestamp', 'hubspot_owner_id'],
};

const ASSOCIATION_TYPE_IDS: Record<number, [ObjectType, ObjectType]> = { 214: ['notes', 'deals'], 216: ['tasks', 'deals'], 5: ['deals', 'companies'], 3: ['deals', 'contacts'] };

export interface HubSpotFake {
  url: string;
  token: string;
  clientSecret: string;
  requests: RecordedRequest[];
  objects: Record<ObjectType, Map<string, HubSpotObject>>;
  /** Property definitions by object type (name → definition). */
  properties: Record<ObjectType, Map<string, Record<string, unknown>>>;
  create(type: ObjectType, properties: Record<string, string | null>): HubSpotObject;
  associate(fromType: ObjectType, fromId: string, toType: ObjectType, toId: string): void;
  associated(fromType: ObjectType, fromId: string, toType: ObjectType): string[];
  fault(f: { method: string; path: RegExp; status: number; count: number; retryAfterSeconds?: number; when?: 'before' | 'after' }): void;
  faultsLeft(): number;
  /** Sends HubSpot's webhook to `url`, signed (v3) with the client secret unless told otherwise. */
  sendWebhook(url: string, events: unknown[], opts?: { secret?: string; timestamp?: number; signature?: string }): Promise<{ status: number; body: string }>;
  close(): Promise<void>;
}

let nextId = 7_000_000_000;

export async function startHubSpotFake(opts: { token: string; clientSecret: string }): Promise<HubSpotFake> {
  const objects = Object.fromEntries(OBJECT_TYPES.map((t) => [t, new Map<string, HubSpotObject>()])) as HubSpotFake['objects'];
  const properties = Object.fromEntries(OBJECT_TYPES.map((t) => [t, new Map(BASE_PROPERTIES[t].map((name) => [name, { name, label: name, type: 'string', fieldType: 'text', groupName: `${t}information`, options: [], hidden: false }]))])) as unknown as HubSpotFake['properties'];
  const associations = new Map<string, Map<ObjectType, Set<string>>>();
  const requests: RecordedRequest[] = [];
  const faults: Fault[] = [];

  const now = () => new Date().toISOString();
  const fake: HubSpotFake = {
    url: '', token: opts.token, clientSecret: opts.clientSecret, requests, objects, properties,
    create(type, props) {
      const id = String(nextId++);
      const o = { id, properties: { ...props }, createdAt: now(), updatedAt: now() };
      objects[type].set(id, o);
      return o;
    },
    associate(fromType, fromId, toType, toId) {
      const add = (a: ObjectType, ai: string, b: ObjectType, bi: string) => {
        const k = `${a}:${ai}`;
        const m = associations.get(k) ?? associations.set(k, new Map()).get(k)!;
        (m.get(b) ?? m.set(b, new Set()).get(b)!).add(bi);
      };
      add(fromType, fromId, toType, toId);
      add(toType, toId, fromType, fromId);
    },
    associated(fromType, fromId, toType) {
      return [...(associations.get(`${fromType}:${fromId}`)?.get(toType) ?? [])];
    },
    fault(f) {
      faults.push({ ...f, when: f.when ?? 'before' });
    },
    faultsLeft() {
      return faults.reduce((s, f) => s + f.count, 0);
    },
    async sendWebhook(url, events, o = {}) {
      const body = JSON.stringify(events);
      const timestamp = String(o.timestamp ?? Date.now());
      const signature = o.signature ?? hubspotV3Signature(o.secret ?? opts.clientSecret, { method: 'POST', uri: url, body, timestamp });
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-hubspot-signature-v3': signature, 'x-hubspot-request-timestamp': timestamp }, body });
      return { status: res.status, body: await res.text() };
    },
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
    },
  };

  const error = (res: ServerResponse, status: number, category: string, message: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json;charset=utf-8', ...headers });
    res.end(JSON.stringify({ status: 'error', message, correlationId: '00000000-0000-4000-8000-000000000000', category, ...extra }));
    return status;
  };
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json;charset=utf-8' });
    res.end(JSON.stringify(body));
    return status;
  };

  const view = (type: ObjectType, o: HubSpotObject, wanted: string[] | null, assocTypes: string[]) => {
    const props: Record<string, string | null> = { hs_object_id: o.id, createdate: o.createdAt, hs_lastmodifieddate: o.updatedAt };
    for (const k of wanted ?? Object.keys(o.properties)) props[k] = o.properties[k] ?? null;
    const assoc: Record<string, { results: { id: string; type: string }[] }> = {};
    for (const t of assocTypes) {
      const ids = fake.associated(type, o.id, t as ObjectType);
      if (ids.length) assoc[t] = { results: ids.map((id) => ({ id, type: `${type.replace(/s$/, '')}_to_${t.replace(/s$/, '').replace(/ie$/, 'y')}` })) };
    }
    return { id: o.id, properties: props, createdAt: o.createdAt, updatedAt: o.updatedAt, archived: false, ...(Object.keys(assoc).length ? { associations: assoc } : {}) };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, body: unknown, path: string, query: Record<string, string>): Promise<number> => {
    if (req.headers.authorization !== `Bearer ${opts.token}`) {
      return error(res, 401, 'INVALID_AUTHENTICATION', 'Authentication credentials not found. This API supports OAuth 2.0 authentication.');
    }
    let m = /^\/crm\/v3\/objects\/([a-z]+)\/(\d+)$/.exec(path);
    if (m && OBJECT_TYPES.includes(m[1] as ObjectType)) {
      const type = m[1] as ObjectType;
      const o = objects[type].get(m[2]!);
      if (!o) return error(res, 404, 'OBJECT_NOT_FOUND', 'resource not found');
      if (req.method === 'GET') {
        const wanted = query.properties ? query.properties.split(',').filter(Boolean) : null;
        return json(res, 200, view(type, o, wanted, query.associations ? query.associations.split(',').filter(Boolean) : []));
      }
      if (req.method === 'PATCH') {
        const input = (body as { properties?: Record<string, unknown> })?.properties ?? {};
        const unknown = Object.keys(input).filter((k) => !properties[type].has(k));
        if (unknown.length) {
          const errors = unknown.map((name) => ({ isValid: false, message: `Property "${name}" does not exist`, error: 'PROPERTY_DOESNT_EXIST', name }));
          return error(res, 400, 'VALIDATION_ERROR', `Property values were not valid: ${JSON.stringify(errors)}`);
        }
        for (const [k, v] of Object.entries(input)) o.properties[k] = v === null ? null : String(v);
        o.updatedAt = now();
        return json(res, 200, view(type, o, null, []));
      }
    }
    m = /^\/crm\/v3\/objects\/([a-z]+)$/.exec(path);
    if (m && req.method === 'POST' && OBJECT_TYPES.includes(m[1] as ObjectType)) {
      const type = m[1] as ObjectType;
      const input = body as { properties?: Record<string, string>; associations?: { to: { id: string }; types: { associationTypeId: number }[] }[] };
      const unknown = Object.keys(input?.properties ?? {}).filter((k) => !properties[type].has(k));
      if (unknown.length) return error(res, 400, 'VALIDATION_ERROR', `Property values were not valid: ${unknown.map((n) => `Property "${n}" does not exist`).join(', ')}`);
      for (const a of input?.associations ?? []) {
        const kind = ASSOCIATION_TYPE_IDS[a.types?.[0]?.associationTypeId ?? -1];
        if (!kind || kind[0] !== type || !objects[kind[1]].has(String(a.to?.id))) return error(res, 400, 'VALIDATION_ERROR', `invalid association to ${JSON.stringify(a.to)}`);
      }
      const o = fake.create(type, input?.properties ?? {});
      for (const a of input?.associations ?? []) fake.associate(type, o.id, ASSOCIATION_TYPE_IDS[a.types[0]!.associationTypeId]![1], String(a.to.id));
      return json(res, 201, view(type, o, null, []));
    }
    m = /^\/crm\/v3\/properties\/([a-z]+)$/.exec(path);
    if (m && OBJECT_TYPES.includes(m[1] as ObjectType)) {
      const type = m[1] as ObjectType;
      if (req.method === 'GET') return json(res, 200, { results: [...properties[type].values()] });
      if (req.method === 'POST') {
        const p = body as { name?: string; label?: string; type?: string; fieldType?: string; groupName?: string };
        if (!p?.name || !p.label || !p.type || !p.fieldType || !p.groupName) return error(res, 400, 'VALIDATION_ERROR', 'name, label, type, fieldType and groupName are required');
        if (properties[type].has(p.name)) return error(res, 409, 'OBJECT_ALREADY_EXISTS', `Property named '${p.name}' already exists.`);
        const def = { ...p, options: [], hidden: false, createdAt: now(), updatedAt: now() };
        properties[type].set(p.name, def);
        return json(res, 201, def);
      }
    }
    return error(res, 404, 'OBJECT_NOT_FOUND', `no route ${req.method} ${path}`);
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const url = new URL(req.url ?? '/', 'http://127.0.0.1');
        // Lists come as repeated keys (what the client sends) or comma-separated; both are HubSpot's.
        const query: Record<string, string> = {};
        for (const [k, v] of url.searchParams.entries()) query[k] = query[k] ? `${query[k]},${v}` : v;
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = null;
        try {
          body = text ? JSON.parse(text) : null;
        } catch {
          body = text;
        }
        const record = (status: number) => requests.push({ method: req.method ?? '', path: url.pathname, query, body, status, at: Date.now() });
        const fault = faults.find((f) => f.count > 0 && f.method === req.method && f.path.test(url.pathname));
        if (fault) {
          fault.count--;
          const answer = () => fault.status === 429
            ? error(res, 429, 'RATE_LIMITS', 'You have reached your secondly limit.', { policyName: 'SECONDLY' }, fault.retryAfterSeconds !== undefined ? { 'retry-after': String(fault.retryAfterSeconds) } : {})
            : error(res, fault.status, 'INTERNAL_ERROR', 'injected by the test');
          if (fault.when === 'after') {
            const sink = { writeHead: () => sink, end: () => sink } as unknown as ServerResponse;
            await handle(req, sink, body, url.pathname, query);
          }
          record(answer());
          return;
        }
        record(await handle(req, res, body, url.pathname, query));
      })().catch((err: unknown) => {
        res.writeHead(500);
        res.end(String(err));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fake;
}
