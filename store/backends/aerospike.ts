import type {
  AerospikeBins, AerospikeExp, BatchResult, BatchWritePolicyOptions, BatchWriteRecord, ConfigOptions, Host, InfoPolicyOptions,
  operations, policy,
} from 'aerospike';
import { log } from '../../runtime/log.js';
import type { AerospikeStoreConfig } from '../config.js';
import type { ReadOptions, ShardHealth } from '../online-store.js';
import { ShardGuard, type GuardedShard } from '../shard-guard.js';
import { stateVersion, type ByteBackend, type CasEntry, type RecordKey, type RecordPart, type ShardError, type ValueEntry } from './byte-backend.js';

/**
 * Aerospike, through the official client (the `aerospike` npm package, a
 * native addon over the C client). Decision 0023 explains the record layout;
 * in short:
 *
 * - One record per (view, version, entity) in `namespace`/`set`, its user key
 *   `RecordKey.routing`, stored with the record (`key: SEND`) so records can
 *   be inspected with aql/asadm.
 * - The record holds both parts in bins (`recordBins`): the value and its
 *   absolute expiry, the state, its expiry and its version. A part past its
 *   expiry bin reads as absent, because the record has one TTL and the two
 *   parts expire at different times.
 * - Reads are one batchRead of the asked part's bins; writes and
 *   compare-and-sets are batchWrites whose per-record filter expressions make
 *   each record's write atomic and conditional on the server.
 *
 * The whole cluster is ONE shard of the shard guard, named by its seed hosts:
 * the client routes each key to its partition's master itself and exposes no
 * per-node call to guard separately, and a failed node's partitions move to
 * the replicas within seconds, so "the cluster" is what fails or answers.
 *
 * Every command's policy carries `totalTimeout = STORE_TIMEOUT_MS`, so the
 * client ends every call itself and the guard adds no timer (`timeoutBy:
 * 'client'`).
 *
 * The native module is loaded on first use (`loadAerospike`), so processes on
 * other engines never load it.
 */

/** What the backend needs from the client: the `aerospike` module's Client, narrowed (a test can pass its own). */
export interface ClusterClient {
  batchRead(records: { key: InstanceType<AerospikeModule['Key']>; bins: string[] }[], policy?: policy.BatchPolicy): Promise<BatchResult[]>;
  batchWrite(records: BatchWriteRecord[], policy?: policy.BatchPolicy | null): Promise<BatchResult[]>;
  infoAny(request?: string, policy?: policy.InfoPolicy | null): Promise<string>;
  isConnected(checkTenderErrors?: boolean): boolean;
  getNodes(): { name: string; address: string }[];
  close(): void;
}

export type AerospikeModule = typeof import('aerospike');

/** Bin names (the server allows at most 15 bytes); short, because every record stores its bin names. */
export const recordBins = {
  value: 'v',
  /** Absolute expiry of the value, ms since the epoch. */
  valueExpiry: 'v_exp',
  /** `<version>\n<json>`, as bytes. */
  state: 's',
  /** Absolute expiry of the state, ms since the epoch. */
  stateExpiry: 's_exp',
  /** The version at the head of the state, what compare-and-set compares. */
  stateVersion: 's_ver',
} as const;

/** The data bin and the expiry bin of each part: what a read of that part asks for. */
export const partBins: { readonly [P in RecordPart]: { readonly data: string; readonly expiry: string } } = {
  value: { data: recordBins.value, expiry: recordBins.valueExpiry },
  state: { data: recordBins.state, expiry: recordBins.stateExpiry },
};

/**
 * The Aerospike status codes this file acts on (the client's
 * `Aerospike.status`; a unit test checks each against it, so the pure
 * functions below need not load the native module).
 */
export const status = {
  OK: 0,
  ERR_RECORD_NOT_FOUND: 2,
  FILTERED_OUT: 27,
  ERR_CLIENT: -1,
  ERR_CONNECTION: -10,
  ERR_TLS_ERROR: -9,
  ERR_INVALID_NODE: -8,
  ERR_NO_MORE_CONNECTIONS: -7,
  ERR_ASYNC_CONNECTION: -6,
  ERR_ASYNC_QUEUE_FULL: -11,
  MAX_ERROR_RATE: -14,
  NO_RESPONSE: -15,
  ERR_SERVER: 1,
  ERR_REQUEST_INVALID: 4,
  ERR_CLUSTER_CHANGE: 7,
  ERR_SERVER_FULL: 8,
  ERR_TIMEOUT: 9,
  ERR_CLUSTER: 11,
  ERR_BIN_INCOMPATIBLE_TYPE: 12,
  ERR_RECORD_TOO_BIG: 13,
  ERR_RECORD_BUSY: 14,
  ERR_UNSUPPORTED_FEATURE: 16,
  ERR_DEVICE_OVERLOAD: 18,
  ERR_NAMESPACE_NOT_FOUND: 20,
  ERR_BIN_NAME: 21,
  ERR_FAIL_FORBIDDEN: 22,
  XDR_KEY_BUSY: 32,
  SECURITY_NOT_ENABLED: 52,
  INVALID_USER: 60,
  INVALID_PASSWORD: 62,
  EXPIRED_PASSWORD: 63,
  INVALID_CREDENTIAL: 65,
  EXPIRED_SESSION: 66,
  NOT_AUTHENTICATED: 80,
  ROLE_VIOLATION: 81,
  QUOTA_EXCEEDED: 83,
  ERR_BATCH_DISABLED: 150,
  ERR_BATCH_MAX_REQUESTS_EXCEEDED: 151,
  ERR_BATCH_QUEUES_FULL: 152,
} as const;

/** `ttl` of a write that keeps the record's current expiry (Aerospike.ttl.DONT_UPDATE). */
export const TTL_DONT_UPDATE = -2;

/** The longest TTL the server accepts (10 years); a longer one would fail the write. */
export const MAX_TTL_SECONDS = 10 * 365 * 86_400;

/** `replica` of reads: the master first, its replicas on a retry (Aerospike.policy.replica.SEQUENCE). */
export const REPLICA_SEQUENCE: policy.replica.SEQUENCE = 2;

/** How long after a failed connect the next attempt starts. */
export const RECONNECT_DELAY_MS = 1000;

// ---------------------------------------------------------------------------
// Configuration and policies
// ---------------------------------------------------------------------------

/** The shard's name in metrics, errors and /readyz: the seed hosts as configured. */
export function clusterShardName(hosts: readonly string[]): string {
  return hosts.join(',');
}

/** The client's configuration: seed hosts (with the TLS name on each when TLS is on), credentials, TLS files. */
export function clientConfig(config: AerospikeStoreConfig): ConfigOptions {
  const tls = config.tls;
  const hosts: Host[] = config.hosts.map((hostPort) => {
    const at = hostPort.lastIndexOf(':');
    return { addr: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)), ...(tls ? { tlsname: tls.name } : {}) };
  });
  return {
    hosts,
    ...(config.user !== undefined && config.password !== undefined ? { user: config.user, password: config.password } : {}),
    ...(tls
      ? {
          tls: {
            enable: true,
            ...(tls.caFile !== undefined ? { cafile: tls.caFile } : {}),
            ...(tls.certFile !== undefined ? { certfile: tls.certFile } : {}),
            ...(tls.keyFile !== undefined ? { keyfile: tls.keyFile } : {}),
          },
        }
      : {}),
    // The first connection (and, with TLS, its handshake) may take longer than one command.
    connTimeoutMs: Math.max(1000, config.commandTimeoutMs),
  };
}

export interface CallPolicies {
  readonly read: policy.BatchPolicy;
  readonly write: policy.BatchPolicy;
  readonly info: policy.InfoPolicy;
}

/**
 * Per-command policies from STORE_TIMEOUT_MS. `totalTimeout` ends every call
 * at the limit (the guard relies on it). Reads may retry once, within the
 * same total, after half of it without an answer: the retry goes to the
 * partition's replica (`replica: SEQUENCE`; the first try is the master), which is
 * what serves while a node is down and the cluster has not yet re-formed.
 * Writes are never retried by the client: a compare-and-set that timed out
 * may have been applied, and a retry would answer "version mismatch" for
 * its own write; the caller gets the timeout (StoreUnavailableError) instead.
 */
export function callPolicies(commandTimeoutMs: number): CallPolicies {
  return {
    read: { totalTimeout: commandTimeoutMs, socketTimeout: Math.ceil(commandTimeoutMs / 2), maxRetries: 1, replica: REPLICA_SEQUENCE },
    write: { totalTimeout: commandTimeoutMs, socketTimeout: commandTimeoutMs, maxRetries: 0 },
    info: { timeout: commandTimeoutMs } satisfies InfoPolicyOptions,
  };
}

// ---------------------------------------------------------------------------
// TTL and expressions: the subtle part
// ---------------------------------------------------------------------------

/**
 * The record TTL (whole seconds, rounded up) that keeps a record until
 * `expireAtMs`: at least 1 s (0 would mean "the namespace's default-ttl", and
 * the expiry bins make the part absent at its exact time anyway), at most the
 * server's limit.
 */
export function ttlSeconds(expireAtMs: number, nowMs: number): number {
  return Math.min(MAX_TTL_SECONDS, Math.max(1, Math.ceil((expireAtMs - nowMs) / 1000)));
}

/** Expiry bins are integers; a fractional ms would be stored as a float and compare as "unknown". */
function wholeMs(ms: number): number {
  return Math.floor(ms);
}

type Exp = AerospikeModule['exp'];

/**
 * True where the part whose expiry lives in `expiryBin` is absent or ends by
 * `atMs`. `or` evaluates left to right and stops at the first true, so the
 * integer read of a missing bin ("unknown") is never reached.
 */
export function partEndsBy(exp: Exp, expiryBin: string, atMs: number): AerospikeExp {
  return exp.or(exp.not(exp.binExists(expiryBin)), exp.le(exp.binInt(expiryBin), exp.int(wholeMs(atMs))));
}

/** The exact complement of `partEndsBy`: the part exists and lives past `atMs`. */
export function partOutlives(exp: Exp, expiryBin: string, atMs: number): AerospikeExp {
  return exp.and(exp.binExists(expiryBin), exp.gt(exp.binInt(expiryBin), exp.int(wholeMs(atMs))));
}

/**
 * True where the stored state's version is `expected`, with the contract's
 * reading of "absent": no state bins, or a state past its expiry bin at
 * `nowMs`, is version 0. (A record the write creates is never filtered: the
 * server applies a write's filter only to a record that exists, which is why
 * a compare-and-set that expects a version > 0 also says `exists: UPDATE`.)
 */
export function stateVersionIs(exp: Exp, expected: number, nowMs: number): AerospikeExp {
  const version = exp.eq(exp.binInt(recordBins.stateVersion), exp.int(expected));
  if (expected === 0) return exp.or(partEndsBy(exp, recordBins.stateExpiry, nowMs), version);
  return exp.and(partOutlives(exp, recordBins.stateExpiry, nowMs), version);
}

/** One try at writing one record: its operations and its per-record policy. */
export interface WriteAttempt {
  readonly ops: operations.Operation[];
  readonly policy: BatchWritePolicyOptions;
}

/** A record's write: a first attempt, and where that may be filtered out for the TTL's sake, its complement. */
export interface WritePlan {
  readonly first: WriteAttempt;
  readonly fallback?: WriteAttempt;
}

/** The parts of the module the write plans are built with. */
export type PlanLibrary = Pick<AerospikeModule, 'exp' | 'operations' | 'policy'>;

function attempt(lib: PlanLibrary, ops: operations.Operation[], filter: AerospikeExp, ttl: number, exists: policy.exists): WriteAttempt {
  return { ops, policy: { filterExpression: filter, ttl, exists, key: lib.policy.key.SEND } };
}

/*
 * ## Why writes come with a fallback: one TTL, two expiries
 *
 * The value and the state of a record expire at different times, but the
 * record has one TTL. Reads make each part absent at its own expiry bin, so
 * the TTL only has to keep the record alive while its longer-lived part is:
 * a write must set the record's TTL to the later of the two parts'
 * expiries. A write knows the expiry of the part it writes but not the
 * stored expiry of the other part, and the TTL of a write is fixed when it is
 * sent: an expression can filter a write, not compute its TTL, and a read of
 * the other expiry first would cost a round trip and race with writers in
 * between.
 *
 * So a write that replaces only one part is sent as a pair of complementary
 * attempts, each atomic on the server:
 *
 * 1. `first`: filter "the other part ends by this part's new expiry" (absent,
 *    or its expiry bin <= the new one) with TTL = this part's expiry. Where
 *    it passes, this part is the longer-lived one and the TTL is exact.
 * 2. `fallback`, sent only for the records `first` filtered out: filter "the
 *    other part lives past the new expiry" with TTL_DONT_UPDATE and
 *    `exists: UPDATE`. Every successful write leaves the record's TTL >= the
 *    expiry of each of its parts (by induction over both attempts: `first`
 *    sets the maximum, `fallback` keeps a TTL that already covers the longer
 *    part), so keeping it covers the new, shorter part too. `exists: UPDATE`
 *    matters: on a record that has just expired the server would turn
 *    DONT_UPDATE into the namespace's default TTL and skip the filter.
 *
 * In the common case one round trip does it (a pushed value with no state,
 * a materialized state that outlives its value). Two filters that are exact
 * complements can both refuse a record only if its other part's expiry
 * changed between the two round trips (a concurrent writer): a value write
 * then starts over with `first` (bounded, see MAX_WRITE_ROUNDS); a
 * compare-and-set answers false, which tells the materializer to re-read and
 * retry, the same as a version race.
 *
 * A write of both parts (a compare-and-set with a value) needs no fallback:
 * its TTL is the later of the two new expiries.
 */

/** How often a value write starts over when a concurrent compare-and-set keeps moving the state's expiry. */
export const MAX_WRITE_ROUNDS = 4;

/** A value-only write (`setMany`): the value and its expiry bin; the state's bins are untouched. */
export function valueWritePlan(lib: PlanLibrary, entry: ValueEntry, nowMs: number): WritePlan {
  const expireAtMs = wholeMs(entry.expireAtMs);
  const ops = [lib.operations.write(recordBins.value, entry.value), lib.operations.write(recordBins.valueExpiry, expireAtMs)];
  const { exists } = lib.policy;
  return {
    first: attempt(lib, ops, partEndsBy(lib.exp, recordBins.stateExpiry, expireAtMs), ttlSeconds(expireAtMs, nowMs), exists.IGNORE),
    fallback: attempt(lib, ops, partOutlives(lib.exp, recordBins.stateExpiry, expireAtMs), TTL_DONT_UPDATE, exists.UPDATE),
  };
}

/*
 * ## Compare-and-set: a version bin and a filter expression
 *
 * The contract compares the version at the head of the stored state. The
 * record's generation cannot stand in for it: every write of the record
 * bumps it, so a value-only write (or a touch) between the materializer's
 * read and its compare-and-set would fail a compare-and-set that should
 * pass, and a generation says nothing about a state that has expired while
 * its record lives on (which must count as version 0). So the version is
 * stored in its own integer bin, written with the state, and each write is
 * guarded by a filter expression on it (`stateVersionIs`): the server
 * evaluates the filter and applies the write ops in one record operation,
 * under the record's lock, and answers FILTERED_OUT (27) without writing when
 * the filter is false, which is the contract's "false". A version > 0 also
 * needs the record to exist (`exists: UPDATE`: ERR_RECORD_NOT_FOUND is
 * false too), because the server does not evaluate a filter on a record the
 * write creates.
 *
 * A state-only compare-and-set keeps the value, so it takes the TTL pair
 * above, each attempt also carrying the version filter; a compare-and-set
 * with a value writes both parts and needs one attempt.
 */

/** A compare-and-set of one record's state (and value, when given). */
export function casWritePlan(lib: PlanLibrary, entry: CasEntry, nowMs: number): WritePlan {
  const { exp, operations: op, policy: { exists } } = lib;
  const stateExpireAtMs = wholeMs(entry.stateExpireAtMs);
  const stateOps = [
    op.write(recordBins.state, Buffer.from(entry.state, 'utf8')),
    op.write(recordBins.stateExpiry, stateExpireAtMs),
    op.write(recordBins.stateVersion, stateVersion(entry.state)),
  ];
  const versionMatches = stateVersionIs(exp, entry.expectedVersion, nowMs);
  const existsFirst = entry.expectedVersion === 0 ? exists.IGNORE : exists.UPDATE;
  if (entry.value) {
    const valueExpireAtMs = wholeMs(entry.valueExpireAtMs);
    const ops = [...stateOps, op.write(recordBins.value, entry.value), op.write(recordBins.valueExpiry, valueExpireAtMs)];
    return { first: attempt(lib, ops, versionMatches, ttlSeconds(Math.max(valueExpireAtMs, stateExpireAtMs), nowMs), existsFirst) };
  }
  return {
    first: attempt(lib, stateOps, exp.and(versionMatches, partEndsBy(exp, recordBins.valueExpiry, stateExpireAtMs)), ttlSeconds(stateExpireAtMs, nowMs), existsFirst),
    fallback: attempt(lib, stateOps, exp.and(versionMatches, partOutlives(exp, recordBins.valueExpiry, stateExpireAtMs)), TTL_DONT_UPDATE, exists.UPDATE),
  };
}

// ---------------------------------------------------------------------------
// Answers and errors
// ---------------------------------------------------------------------------

/** A record the server could not read: the reason, for the StoreUnavailableError of that record. */
export interface Unreadable {
  readonly unreadable: string;
}

/**
 * One record of a batch read, as the contract's answer for `part`: the bytes,
 * null (no record, no such part, or the part past its expiry bin at `nowMs`),
 * or why it cannot be read (a per-record failure status, or a bin that does
 * not hold bytes).
 */
export function partAnswer(result: { readonly status: number; readonly record?: { readonly bins?: AerospikeBins } | null }, part: RecordPart, nowMs: number): Buffer | null | Unreadable {
  if (result.status === status.ERR_RECORD_NOT_FOUND) return null;
  if (result.status !== status.OK) return { unreadable: `the record's read failed: ${statusReason(result.status)}` };
  const names = partBins[part];
  const bins = result.record?.bins ?? {};
  const data = bins[names.data];
  if (data === undefined || data === null) return null;
  const expiry = bins[names.expiry];
  // A part written by this backend always has its expiry; one without (written by hand) lives as long as its record.
  if ((typeof expiry === 'number' || typeof expiry === 'bigint') && Number(expiry) <= nowMs) return null;
  if (!Buffer.isBuffer(data)) return { unreadable: `bin ${names.data} holds a ${describeBin(data)}, not bytes (was the record written by something other than this gateway?)` };
  return data;
}

/**
 * A batch result's status code. aerospike.d.ts types `BatchResult.status` as
 * any member of its `status` namespace, which includes the `getMessage`
 * function; the client sets the numeric code.
 */
function statusCode(result: BatchResult): number {
  return result.status as unknown as number;
}

function describeBin(value: unknown): string {
  if (Array.isArray(value)) return 'list';
  return typeof value === 'object' ? 'map' : typeof value;
}

/** What one record's write status means to a write loop. */
export type WriteOutcome = 'written' | 'refused' | 'failed';

/** OK: written; FILTERED_OUT (the filter was false) or ERR_RECORD_NOT_FOUND (`exists: UPDATE` on no record): refused; anything else failed. */
export function writeOutcome(code: number): WriteOutcome {
  if (code === status.OK) return 'written';
  if (code === status.FILTERED_OUT || code === status.ERR_RECORD_NOT_FOUND) return 'refused';
  return 'failed';
}

/** What each status means to an operator, where the client's own message does not say. */
const hints: { readonly [code: number]: string } = {
  [status.ERR_CONNECTION]: 'no seed host accepted a connection: is the cluster up, and are AEROSPIKE_HOSTS right?',
  [status.ERR_TLS_ERROR]: "TLS failed: check AEROSPIKE_TLS_NAME against the nodes' certificate and AEROSPIKE_TLS_CA_FILE",
  [status.ERR_INVALID_NODE]: "no node serves this partition in the client's map (a node left or the cluster is empty); the client re-tends every second",
  [status.ERR_NO_MORE_CONNECTIONS]: 'the per-node connection limit is reached (too many commands in flight)',
  [status.ERR_ASYNC_CONNECTION]: 'the connection to a node failed',
  [status.ERR_ASYNC_QUEUE_FULL]: 'the client\'s command queue is full (too many commands in flight)',
  [status.MAX_ERROR_RATE]: 'the client backs off a node that failed too often in the last tend interval',
  [status.NO_RESPONSE]: "the record's node did not answer (down, or unreachable until the cluster re-forms)",
  [status.ERR_TIMEOUT]: 'no answer within STORE_TIMEOUT_MS',
  [status.ERR_CLUSTER_CHANGE]: 'the cluster is re-forming (a node joined or left)',
  [status.ERR_CLUSTER]: 'the cluster is re-forming or a partition is unavailable',
  [status.ERR_SERVER_FULL]: 'the namespace is full (stop-writes)',
  [status.ERR_DEVICE_OVERLOAD]: "the node's storage device cannot keep up",
  [status.ERR_RECORD_BUSY]: 'too many concurrent writes to one record',
  [status.XDR_KEY_BUSY]: 'the record is busy with XDR',
  [status.ERR_RECORD_TOO_BIG]: "the record exceeds the namespace's write-block / max-record-size",
  [status.ERR_NAMESPACE_NOT_FOUND]: 'the namespace (AEROSPIKE_NAMESPACE) is not configured on the cluster',
  [status.ERR_FAIL_FORBIDDEN]:
    'the server forbids the write: a write with a TTL into a namespace with nsup-period 0 (set nsup-period, or allow-ttl-without-nsup true), a truncated set, or stop-writes on clock skew',
  [status.ERR_REQUEST_INVALID]: 'the server rejected the request (filter expressions need server 5.2+, batch writes 6.0+)',
  [status.ERR_UNSUPPORTED_FEATURE]: 'the server does not support the request (filter expressions need server 5.2+, batch writes 6.0+)',
  [status.ERR_BIN_INCOMPATIBLE_TYPE]: 'a bin holds another type than this gateway writes (another writer in the set?)',
  [status.ERR_BIN_NAME]: 'a bin name is refused by the server',
  [status.SECURITY_NOT_ENABLED]: 'credentials are set but the cluster has security disabled: unset AEROSPIKE_USER and AEROSPIKE_PASSWORD',
  [status.INVALID_USER]: 'authentication failed: unknown AEROSPIKE_USER',
  [status.INVALID_PASSWORD]: 'authentication failed: wrong AEROSPIKE_PASSWORD',
  [status.INVALID_CREDENTIAL]: 'authentication failed: check AEROSPIKE_USER and AEROSPIKE_PASSWORD',
  [status.EXPIRED_PASSWORD]: 'authentication failed: the password has expired',
  [status.EXPIRED_SESSION]: 'the login session expired; the client logs in again',
  [status.NOT_AUTHENTICATED]: 'the cluster requires authentication: set AEROSPIKE_USER and AEROSPIKE_PASSWORD',
  [status.ROLE_VIOLATION]: "the user's roles do not allow this command (it needs read-write on the namespace and set)",
  [status.QUOTA_EXCEEDED]: "the user's read or write quota is exceeded",
  [status.ERR_BATCH_DISABLED]: 'batch commands are disabled on the server',
  [status.ERR_BATCH_MAX_REQUESTS_EXCEEDED]: 'the batch has more keys than the server allows (batch-max-requests); lower MAX_BATCH_IDS',
  [status.ERR_BATCH_QUEUES_FULL]: "the server's batch queues are full",
};

/** A status as words: the name the client gives it and what it means here, e.g. `status 22: the server forbids…`. */
export function statusReason(code: number): string {
  const name = Object.entries(status).find(([, value]) => value === code)?.[0];
  const hint = hints[code];
  return `status ${code}${name ? ` ${name}` : ''}${hint ? `: ${hint}` : ''}`;
}

/**
 * The reason of a failed call, in words an operator can act on: the client's
 * message, the status code and what it means, and whether a write may have
 * been applied anyway (`inDoubt`).
 */
export function aerospikeReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'number' || !isAerospikeError(error)) return error.message;
  const inDoubt = (error as { inDoubt?: unknown }).inDoubt === true ? ' (a write may have been applied anyway)' : '';
  return `${error.message} [${statusReason(code)}]${inDoubt}`;
}

function isAerospikeError(error: Error): boolean {
  return error.name === 'AerospikeError';
}

/** The calls fail with this until the client is connected, saying why it is not (the last connect error). */
export class NotConnectedError extends Error {
  override name = 'NotConnectedError';
}

/** The namespaces an `infoAny('namespaces')` answer lists (`namespaces\ttest;bar\n`, or just `test;bar`). */
export function namespacesOf(info: string): string[] {
  const tab = info.indexOf('\t');
  return (tab >= 0 ? info.slice(tab + 1) : info).trim().split(';').filter(Boolean);
}

// ---------------------------------------------------------------------------
// The client: loaded once, connected, reconnected
// ---------------------------------------------------------------------------

let loading: Promise<AerospikeModule> | undefined;

/**
 * The `aerospike` module, imported on first use. It is CommonJS: through an
 * ESM dynamic import, `module.exports` is the namespace's `default`.
 *
 * The C client writes its own log lines to stderr, beside the structured
 * log. Every failure reaches this backend as an error with the client's
 * message and is reported from here, so by default they are off; with
 * LOG_LEVEL=debug (or trace) its warnings are on, for the details it logs
 * only there (which seed refused a connection, and with which socket error).
 */
export function loadAerospike(): Promise<AerospikeModule> {
  loading ??= import('aerospike').then((module) => {
    const aerospike = module.default;
    aerospike.setDefaultLogging({ level: clientLogLevel(aerospike, process.env.LOG_LEVEL) });
    return aerospike;
  });
  return loading;
}

/** The C client's log level for a LOG_LEVEL: its warnings at debug and trace, nothing otherwise. */
export function clientLogLevel(lib: Pick<AerospikeModule, 'log'>, logLevel: string | undefined): AerospikeModule['log'][keyof AerospikeModule['log']] {
  return logLevel === 'debug' || logLevel === 'trace' ? lib.log.WARN : lib.log.OFF;
}

/**
 * Creates a client and connects it. A client whose connect failed is closed
 * and dropped: connecting the same client again crashes the native addon
 * (seen with 6.7.1), so each attempt gets a new one.
 */
export async function connectAerospike(lib: AerospikeModule, config: ConfigOptions, onEvent: (event: string, detail?: unknown) => void): Promise<ClusterClient> {
  const client = lib.client(config);
  try {
    await client.connect();
  } catch (error) {
    client.close();
    throw error;
  }
  for (const event of ['nodeAdded', 'nodeRemoved', 'disconnected']) client.on(event, (detail: unknown) => onEvent(event, detail));
  return client;
}

interface Connected {
  readonly lib: AerospikeModule;
  readonly client: ClusterClient;
}

export interface AerospikeBackendOptions {
  /** The clock of the expiry bins (the codec store's). */
  readonly now?: () => number;
  readonly reconnectDelayMs?: number;
  /** How a client is made and connected; a test passes a fake. */
  readonly connect?: (lib: AerospikeModule, config: ConfigOptions, onEvent: (event: string, detail?: unknown) => void) => Promise<ClusterClient>;
}

/**
 * The one client of a backend. The first connect starts at construction; a
 * failed one is retried every `reconnectDelayMs` with a new client (the C
 * client cannot connect a client twice) until close. Once connected, the C
 * client follows the cluster by itself: it tends the nodes every second,
 * adds and drops them, and reconnects to the seeds if it loses them all.
 * Calls never wait for a connect: they fail at once, naming the last
 * connect error, like a Redis shard without an offline queue.
 */
class ClusterConnection {
  private connected: Connected | undefined;
  private attempt: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private lastError = 'connecting to the cluster (first attempt not finished)';
  private closed = false;
  private lastLoggedAt = 0;

  constructor(
    private readonly config: ConfigOptions,
    private readonly labels: { readonly store: string; readonly shard: string },
    private readonly options: Required<Pick<AerospikeBackendOptions, 'reconnectDelayMs' | 'connect'>>,
  ) {
    this.attempt = this.connectOnce();
  }

  /** The connected client, or NotConnectedError saying why there is none. */
  current(): Connected {
    if (this.connected) return this.connected;
    throw new NotConnectedError(this.closed ? 'the store is closed' : `not connected to the cluster: ${this.lastError}`);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.attempt;
    this.connected?.client.close();
    this.connected = undefined;
  }

  private async connectOnce(): Promise<void> {
    try {
      const lib = await loadAerospike();
      const client = await this.options.connect(lib, this.config, (event, detail) => this.onClusterEvent(event, detail));
      if (this.closed) {
        client.close();
        return;
      }
      this.connected = { lib, client };
      log.info({ ...this.labels, nodes: client.getNodes().length }, 'aerospike cluster connected');
    } catch (error) {
      this.lastError = aerospikeReason(error);
      this.logThrottled({ err: this.lastError }, 'aerospike connect failed; retrying');
      if (!this.closed) {
        this.retry = setTimeout(() => (this.attempt = this.connectOnce()), this.options.reconnectDelayMs);
        this.retry.unref();
      }
    }
  }

  private onClusterEvent(event: string, detail: unknown): void {
    const node = detail as { nodeName?: string; nodeAddress?: string } | undefined;
    const fields = { ...this.labels, event, node: node?.nodeName, address: node?.nodeAddress };
    if (event === 'nodeAdded') log.info(fields, 'aerospike node joined the client\'s view');
    else log.warn(fields, event === 'disconnected' ? 'aerospike client lost every node; it keeps tending the seeds' : 'aerospike node left the client\'s view');
  }

  /** A cluster that stays down fails a connect every second; one line per 5 s is enough. */
  private logThrottled(fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    if (now - this.lastLoggedAt < 5000) return;
    this.lastLoggedAt = now;
    log.warn({ ...this.labels, ...fields }, msg);
  }
}

// ---------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------

/**
 * The indexes of `records` in waves that name each record at most once, in
 * order: the n-th write of a record goes in wave n. Neither the client nor
 * the server specifies in which order the sub-commands of one batch are
 * applied, so a batch that named a record twice could apply its writes
 * either way round; waves keep the caller's order, as a Redis pipeline
 * does. Almost always one wave.
 */
export function batchWaves(records: readonly RecordKey[]): number[][] {
  const waves: number[][] = [];
  const seen = new Map<string, number>();
  records.forEach((record, index) => {
    const wave = seen.get(record.routing) ?? 0;
    seen.set(record.routing, wave + 1);
    (waves[wave] ??= []).push(index);
  });
  return waves;
}

/**
 * The client does not reject a batch when a node fails: that node's records
 * come back with their own status (NO_RESPONSE, a timeout, ...) and the
 * others are served, so one dead node fails only its partitions' records.
 * When every record of a batch failed, though, nothing answered, and the
 * call fails as a whole: the breaker counts it (it opens on a cluster that
 * is down or hung, not on one lost node) and every record gets the reason.
 */
function failIfNoneAnswered(results: readonly BatchResult[], answered: (code: number) => boolean, firstRecord: RecordKey): void {
  if (results.length === 0 || results.some((result) => answered(statusCode(result)))) return;
  const inDoubt = results.some((r) => r.inDoubt) ? ' (writes may have been applied anyway)' : '';
  throw new Error(`no record of the batch was answered (the first, ${firstRecord.routing}: ${statusReason(statusCode(results[0]!))})${inDoubt}`);
}

/** One record's planned write and where it stands. */
interface Pending {
  readonly index: number;
  readonly attempt: WriteAttempt;
  readonly isFallback: boolean;
}

export class AerospikeBackend implements ByteBackend {
  readonly kind = 'aerospike';
  /** The guard's shard for the whole cluster. */
  readonly shardName: string;
  private readonly shard: GuardedShard;
  private readonly connection: ClusterConnection;
  private readonly policies: CallPolicies;
  private readonly now: () => number;

  constructor(private readonly config: AerospikeStoreConfig, options: AerospikeBackendOptions = {}) {
    if (config.hosts.length === 0) throw new Error('AerospikeBackend needs at least one seed host');
    this.now = options.now ?? Date.now;
    this.shardName = clusterShardName(config.hosts);
    this.policies = callPolicies(config.commandTimeoutMs);
    const guard = new ShardGuard({
      store: this.kind,
      callTimeoutMs: config.commandTimeoutMs,
      ...(config.breaker ? { breaker: config.breaker } : {}),
      timeoutBy: 'client',
      describe: (_shard, error) => aerospikeReason(error),
    });
    this.shard = guard.shard(this.shardName);
    this.connection = new ClusterConnection(clientConfig(config), { store: this.kind, shard: this.shardName }, {
      reconnectDelayMs: options.reconnectDelayMs ?? RECONNECT_DELAY_MS,
      connect: options.connect ?? connectAerospike,
    });
  }

  async getMany(records: readonly RecordKey[], part: RecordPart, options: ReadOptions = {}): Promise<(Buffer | null | ShardError)[]> {
    if (records.length === 0) return [];
    let results: BatchResult[];
    try {
      results = await this.shard.call(async () => {
        const { client, lib } = this.connection.current();
        const bins = [partBins[part].data, partBins[part].expiry];
        const answers = await client.batchRead(records.map((record) => ({ key: this.key(lib, record), bins })), this.policies.read);
        if (answers.length !== records.length) throw new Error(`batchRead answered ${answers.length} records for ${records.length}`);
        failIfNoneAnswered(answers, (code) => code === status.OK || code === status.ERR_RECORD_NOT_FOUND, records[0]!);
        return answers;
      }, { deadline: options.deadline, read: true });
    } catch (error) {
      // The guard's error (StoreUnavailableError or DeadlineExceededError), for every record: the cluster is the shard.
      return records.map(() => error as ShardError);
    }
    const now = this.now();
    return results.map((result) => {
      const answer = partAnswer({ status: statusCode(result), record: result.record }, part, now);
      return answer === null || Buffer.isBuffer(answer) ? answer : this.shard.unavailable(new Error(answer.unreadable));
    });
  }

  async setMany(entries: readonly ValueEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const lib = await this.library();
    const now = this.now();
    const plans = entries.map((entry) => valueWritePlan(lib, entry, now));
    const records = entries.map((e) => e.record);
    for (const wave of batchWaves(records)) {
      let pending: Pending[] = wave.map((index) => ({ index, attempt: plans[index]!.first, isFallback: false }));
      for (let round = 1; pending.length > 0; round++) {
        if (round > MAX_WRITE_ROUNDS) {
          throw this.shard.unavailable(new Error(`record ${records[pending[0]!.index]!.routing}: its state's expiry changed under each of ${MAX_WRITE_ROUNDS} write attempts (concurrent compare-and-sets)`));
        }
        const outcomes = await this.writeBatch(pending, records);
        // Refused by a filter (or, for the fallback, by a record that expired in between): the other attempt's turn.
        pending = pending.filter((_, j) => outcomes[j] === 'refused').map((p) => {
          const plan = plans[p.index]!;
          return p.isFallback ? { index: p.index, attempt: plan.first, isFallback: false } : { index: p.index, attempt: plan.fallback!, isFallback: true };
        });
      }
    }
  }

  async compareAndSet(entries: readonly CasEntry[]): Promise<boolean[]> {
    const out = entries.map(() => false);
    if (entries.length === 0) return out;
    const lib = await this.library();
    const now = this.now();
    const plans = entries.map((entry) => casWritePlan(lib, entry, now));
    const records = entries.map((e) => e.record);
    for (const wave of batchWaves(records)) {
      let pending: Pending[] = wave.map((index) => ({ index, attempt: plans[index]!.first, isFallback: false }));
      while (pending.length > 0) {
        const outcomes = await this.writeBatch(pending, records);
        const next: Pending[] = [];
        pending.forEach((p, j) => {
          if (outcomes[j] === 'written') out[p.index] = true;
          // Refused: a version mismatch, or the TTL half of the filter; only the fallback can tell which.
          else if (!p.isFallback && plans[p.index]!.fallback) next.push({ index: p.index, attempt: plans[p.index]!.fallback!, isFallback: true });
        });
        pending = next;
      }
    }
    return out;
  }

  /** Past the circuit breaker: readiness asks the cluster itself, open circuit or not. */
  async ping(): Promise<void> {
    try {
      await this.probe();
    } catch (error) {
      throw this.shard.unavailable(error);
    }
  }

  async health(): Promise<ShardHealth[]> {
    let nodes = 0;
    try {
      nodes = this.connection.current().client.getNodes().length;
    } catch {
      // Not connected: the probe says so.
    }
    return [await this.shard.health(() => this.probe(), `reachable, ${nodes} node${nodes === 1 ? '' : 's'}`)];
  }

  async close(): Promise<void> {
    await this.connection.close();
  }

  /**
   * One batch write of each pending record's current attempt, through the
   * guard. Each record's outcome in order; any failed record fails the call
   * (rejects, naming the record and the status), like a failed reply in a
   * Redis pipeline.
   */
  private async writeBatch(pending: readonly Pending[], records: readonly RecordKey[]): Promise<WriteOutcome[]> {
    const results = await this.shard.call(async () => {
      const { client, lib } = this.connection.current();
      const batch: BatchWriteRecord[] = pending.map((p) => ({
        type: lib.batchType.BATCH_WRITE,
        key: this.key(lib, records[p.index]!),
        ops: p.attempt.ops,
        policy: p.attempt.policy,
      }));
      const answers = await client.batchWrite(batch, this.policies.write);
      if (answers.length !== batch.length) throw new Error(`batchWrite answered ${answers.length} records for ${batch.length}`);
      failIfNoneAnswered(answers, (code) => writeOutcome(code) !== 'failed', records[pending[0]!.index]!);
      return answers;
    });
    return results.map((result, j) => {
      const code = statusCode(result);
      const outcome = writeOutcome(code);
      if (outcome === 'failed') {
        const inDoubt = result.inDoubt ? ' (it may have been applied anyway)' : '';
        throw this.shard.unavailable(new Error(`the write of record ${records[pending[j]!.index]!.routing} failed: ${statusReason(code)}${inDoubt}`));
      }
      return outcome;
    });
  }

  /** The client is connected, a node answers an info command, and it serves the configured namespace. */
  private async probe(): Promise<void> {
    const { client } = this.connection.current();
    if (!client.isConnected(true)) throw new Error('the client has no live node: the last tend of every node failed');
    const namespaces = namespacesOf(await client.infoAny('namespaces', this.policies.info));
    if (!namespaces.includes(this.config.namespace)) {
      throw new Error(`namespace ${JSON.stringify(this.config.namespace)} (AEROSPIKE_NAMESPACE) is not configured on the cluster; it has ${namespaces.join(', ') || 'none'}`);
    }
  }

  /** The module, for building operations and expressions; a library that failed to load fails the call. */
  private async library(): Promise<AerospikeModule> {
    try {
      return await loadAerospike();
    } catch (error) {
      throw this.shard.unavailable(new Error(`the aerospike client library cannot be loaded: ${error instanceof Error ? error.message : String(error)}`));
    }
  }

  private key(lib: AerospikeModule, record: RecordKey): InstanceType<AerospikeModule['Key']> {
    return new lib.Key(this.config.namespace, this.config.set, record.routing);
  }
}
