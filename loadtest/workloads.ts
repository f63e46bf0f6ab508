import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fromRoot } from '../runtime/paths.js';
import { mulberry32 } from '../store/demo-data.js';
import type { PersistedOperation } from '../schema/manifest.js';
import type { BodySource } from './runner.js';
import { Zipf } from './zipf.js';

/**
 * The benchmark's request mix, built from the persisted operations. Ids are
 * drawn from the loaded data set by a seeded PRNG (uniformly, or for W4 by
 * a Zipf law), so every system sees the same sequence of requests.
 */
export const dataSet = { users: 100_000, items: 10_000, merchants: 1_000 } as const;

/**
 * W4's skew: user ids by rank, P(user k) ∝ k^-1.1 over the 100k users (user "1" is the hottest,
 * about 13 % of draws; the 100 hottest about 58 %). The change stream draws from it too.
 */
export const userZipf = new Zipf(dataSet.users, 1.1);

export interface Workload {
  readonly name: 'W1' | 'W2' | 'W3' | 'W4';
  readonly operation: string;
  readonly description: string;
  variables(random: () => number): Record<string, unknown>;
}

const pick = (random: () => number, n: number): string => String(1 + Math.floor(random() * n));

export const workloads: readonly Workload[] = [
  {
    name: 'W1',
    operation: 'UserClickRate',
    description: 'clickRate of 3 random users',
    variables: (r) => ({ ids: [pick(r, dataSet.users), pick(r, dataSet.users), pick(r, dataSet.users)] }),
  },
  {
    name: 'W2',
    operation: 'RankingFeatures',
    description: "a user's clickStats + profile and itemStats of 20 candidate items (two subgraphs)",
    variables: (r) => ({ user: pick(r, dataSet.users), items: Array.from({ length: 20 }, () => pick(r, dataSet.items)) }),
  },
  {
    name: 'W3',
    operation: 'FraudFeatures',
    description: "a user's clickStats + profile and a merchant's riskStats",
    variables: (r) => ({ user: pick(r, dataSet.users), merchant: pick(r, dataSet.merchants) }),
  },
  {
    name: 'W4',
    operation: 'UserClickRate',
    description: 'clickRate of 3 Zipf-distributed users (s = 1.1), while 1,000 click events/s change them',
    variables: (r) => ({ ids: [zipfUser(r), zipfUser(r), zipfUser(r)] }),
  },
];

const zipfUser = (random: () => number): string => String(userZipf.rank(random()));

/**
 * The data set is loaded once, so views with a short TTL would go stale (then missing) during a
 * run and later rounds would measure different responses. A run's processes get this copy of the
 * registry, with TTLs raised to an hour (types and fields unchanged), by REGISTRY_FILE. The
 * caller removes the file when done.
 */
export function longTtlRegistryFile(tag: string): string {
  const file = path.join(os.tmpdir(), `fg-${tag}-registry-${process.pid}.yaml`);
  fs.writeFileSync(file, fs.readFileSync(fromRoot('schema', 'registry.yaml'), 'utf8').replace(/ttl: (\d+)(s|m)\b/g, 'ttl: 1h'));
  return file;
}

/** How a system wants the operation: by persisted id (our gateway, the raw baseline) or as text (stock Apollo). */
export type RequestStyle = 'persisted' | 'text';

export function bodySource(workload: Workload, operation: PersistedOperation, style: RequestStyle, seed: number): BodySource {
  const random = mulberry32(seed);
  const persisted = JSON.stringify({ version: 1, sha256Hash: operation.id });
  const query = JSON.stringify(operation.body);
  return () => {
    const variables = JSON.stringify(workload.variables(random));
    return style === 'persisted'
      ? `{"extensions":{"persistedQuery":${persisted}},"variables":${variables}}`
      : `{"query":${query},"variables":${variables}}`;
  };
}
