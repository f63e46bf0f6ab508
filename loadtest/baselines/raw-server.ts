import http from 'node:http';
import { Redis } from 'ioredis';
import { parseArgs } from 'node:util';
import { readManifest } from '../../schema/manifest.js';
import { loadRegistry } from '../../schema/registry.js';
import { activeVersionOf, type ViewVersion } from '../../schema/types.js';
import { codecFor } from '../../store/codec.js';
import { isStale } from '../../store/freshness.js';
import { storeKey } from '../../store/keys.js';

/**
 * Baseline "raw": what a careful engineer would write by hand for exactly
 * these three operations, with no GraphQL at all. It answers the same
 * persisted-query requests with the same JSON, reading the same Redis keys
 * with one pipeline per request. It is the practical limit of a single Node
 * process on this store; the gateway's fast path is measured against it.
 *
 *   node dist/loadtest/baselines/raw-server.js --port 4201 --redis redis://127.0.0.1:6379
 */
const { values } = parseArgs({ options: { port: { type: 'string' }, redis: { type: 'string' } } });
// REGISTRY_FILE: the benchmark passes the same registry to every system.
const registry = loadRegistry(process.env.REGISTRY_FILE);
const view = (name: string): ViewVersion => {
  for (const e of registry.entities) for (const v of e.views) if (v.name === name) return activeVersionOf(v);
  throw new Error(`no view ${name}`);
};
const clickStats = view('clickStats');
const profile = view('profile');
const itemStats = view('itemStats');
const riskStats = view('riskStats');
const redis = new Redis(values.redis ?? 'redis://127.0.0.1:6379', { enableAutoPipelining: false });

type Json = Record<string, unknown> | null;

function viewJson(v: ViewVersion, blob: Buffer | null, fields: readonly string[], now: number): Json {
  if (blob === null) return null;
  const record = codecFor(v).decode(blob);
  const stale = isStale(v, record.eventTimeMs, now);
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    if (f === 'eventTime') out.eventTime = new Date(record.eventTimeMs).toISOString();
    else if (f === 'stale') out.stale = stale;
    else out[f] = stale ? null : record.values[f] ?? null;
  }
  return out;
}

const clickFieldsW1 = ['clickRate', 'stale'];
const clickFieldsFull = ['clickRate', 'clicks', 'impressions', 'eventTime', 'stale'];
const profileFields = ['sessionLength', 'isPremium', 'country', 'embedding', 'stale'];
const itemFields = ['ctr', 'price', 'category', 'eventTime', 'stale'];
const fraudClickFields = ['clickRate', 'stale'];
const fraudProfileFields = ['country', 'isPremium', 'sessionLength', 'stale'];
const riskFields = ['txnCount1h', 'amountSum1h', 'chargebackRate', 'eventTime', 'stale'];

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the baseline trusts its own load generator
type Handler = (variables: any) => Promise<unknown>;
const handlers = new Map<string, Handler>();
const manifest = readManifest();
const idOf = (name: string): string => manifest.operations.find((o) => o.name === name)!.id;

handlers.set(idOf('UserClickRate'), async ({ ids }: { ids: string[] }) => {
  const [[, blobs]] = (await redis.pipeline().mgetBuffer(...ids.map((id) => storeKey(clickStats, id))).exec()) as [[null, (Buffer | null)[]]];
  const now = Date.now();
  return { users: ids.map((id, i) => (blobs[i] ? { id, clickStats: viewJson(clickStats, blobs[i]!, clickFieldsW1, now) } : null)) };
});

handlers.set(idOf('RankingFeatures'), async ({ user, items }: { user: string; items: string[] }) => {
  const results = (await redis.pipeline()
    .mgetBuffer(storeKey(clickStats, user))
    .mgetBuffer(storeKey(profile, user))
    .mgetBuffer(...items.map((id) => storeKey(itemStats, id)))
    .exec()) as [null, (Buffer | null)[]][];
  const now = Date.now();
  const click = results[0]![1][0]!;
  const prof = results[1]![1][0]!;
  const itemBlobs = results[2]![1];
  return {
    user: click || prof ? { id: user, clickStats: viewJson(clickStats, click, clickFieldsFull, now), profile: viewJson(profile, prof, profileFields, now) } : null,
    items: items.map((id, i) => (itemBlobs[i] ? { id, itemStats: viewJson(itemStats, itemBlobs[i]!, itemFields, now) } : null)),
  };
});

handlers.set(idOf('FraudFeatures'), async ({ user, merchant }: { user: string; merchant: string }) => {
  const results = (await redis.pipeline()
    .mgetBuffer(storeKey(clickStats, user))
    .mgetBuffer(storeKey(profile, user))
    .mgetBuffer(storeKey(riskStats, merchant))
    .exec()) as [null, (Buffer | null)[]][];
  const now = Date.now();
  const click = results[0]![1][0]!;
  const prof = results[1]![1][0]!;
  const risk = results[2]![1][0]!;
  return {
    user: click || prof ? { id: user, clickStats: viewJson(clickStats, click, fraudClickFields, now), profile: viewJson(profile, prof, fraudProfileFields, now) } : null,
    merchant: risk ? { id: merchant, riskStats: viewJson(riskStats, risk, riskFields, now) } : null,
  };
});

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    let handler: Handler | undefined;
    let variables: Record<string, unknown> = {};
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      handler = handlers.get(body?.extensions?.persistedQuery?.sha256Hash);
      variables = body?.variables ?? {};
    } catch {
      handler = undefined;
    }
    if (req.url === '/healthz') return void res.end('ok');
    if (!handler) {
      res.writeHead(400, { 'content-type': 'application/json' });
      return void res.end('{"errors":[{"message":"unknown operation"}]}');
    }
    handler(variables).then(
      (data) => {
        const text = JSON.stringify({ data });
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      },
      (error: Error) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ message: error.message }] }));
      },
    );
  });
});
server.keepAliveTimeout = 65_000;
server.listen(Number(values.port ?? 4201), '127.0.0.1');
