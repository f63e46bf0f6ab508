/**
 * The gateway over TLS (TLS_CERT_FILE / TLS_KEY_FILE, optionally TLS_CA_FILE
 * for client certificates), with a throwaway PKI made by the openssl CLI:
 * start-up checks naming the variable, a query over HTTPS, a graphql-ws
 * subscription over wss on the same port, and plain HTTP refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { encodeChange } from '../../eventlog/change-event.js';
import { EmbeddedLog } from '../../eventlog/embedded-log.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { ConfigError } from '../../runtime/errors.js';
import { activeVersionOf } from '../../schema/types.js';
import type { CodecStore } from '../../store/codec-store.js';
import { createStore } from '../../store/create-store.js';
import { NodeProcess, registry, testConfig } from '../support/gateway.js';
import { freePort } from '../support/ports.js';
import { makeTestPki, type TestPki } from '../support/tls-certs.js';
import { eventually } from '../support/wait.js';

const NOW = Date.now();
const clickStats = activeVersionOf(registry.entities.find((e) => e.name === 'user')!.views.find((v) => v.name === 'clickStats')!);

interface HttpsReply {
  readonly status: number;
  readonly body: string;
}

/** A POST (or, without a body, a GET) over HTTPS trusting `ca`, optionally presenting a client certificate. */
function httpsPost(url: string, body: string | null, tls: https.RequestOptions): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const method = body === null ? 'GET' : 'POST';
    const req = https.request(url, { method, headers: { 'content-type': 'application/json' }, agent: false, timeout: 5000, ...tls }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within 5 s`)));
    req.end(body ?? undefined);
  });
}

const query = JSON.stringify({ query: '{ user(id: "1") { clickStats { clickRate } } }' });

describe('TLS configuration', () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki();
  });
  after(() => pki?.remove());

  const failsNaming = (env: Record<string, string>, variable: string, message: RegExp) =>
    assert.throws(() => testConfig(env), (e: unknown) => e instanceof ConfigError && e.variable === variable && message.test(e.message));

  it('needs both the certificate and the key, or neither', () => {
    failsNaming({ TLS_CERT_FILE: pki.serverCert }, 'TLS_KEY_FILE', /both or neither/);
    failsNaming({ TLS_KEY_FILE: pki.serverKey }, 'TLS_CERT_FILE', /both or neither/);
    failsNaming({ TLS_CA_FILE: pki.caCert }, 'TLS_CA_FILE', /TLS_CERT_FILE and TLS_KEY_FILE/);
    assert.equal(testConfig({}).tls, null);
  });

  it('fails at start-up on an unreadable file, a non-certificate, or a key of another certificate, naming the variable', () => {
    failsNaming({ TLS_CERT_FILE: `${pki.dir}/missing.crt`, TLS_KEY_FILE: pki.serverKey }, 'TLS_CERT_FILE', /cannot read .*missing\.crt/);
    failsNaming({ TLS_CERT_FILE: pki.serverKey, TLS_KEY_FILE: pki.serverKey }, 'TLS_CERT_FILE', /not a PEM certificate/);
    failsNaming({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverCert }, 'TLS_KEY_FILE', /not a PEM private key/);
    failsNaming({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.strayKey }, 'TLS_KEY_FILE', /does not match the certificate in TLS_CERT_FILE/);
    const ok = testConfig({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey });
    assert.equal(ok.tls?.cert, pki.read(pki.serverCert));
    assert.equal(ok.tls?.ca, null);
  });
});

describe('the gateway over TLS', () => {
  let pki: TestPki;
  let store: CodecStore;
  let eventLog: EmbeddedLog;
  let gateway: RunningGateway;
  let ca: string;

  before(async () => {
    pki = makeTestPki();
    ca = pki.read(pki.caCert);
    store = createStore({ kind: 'embedded' }, () => NOW);
    await store.write(clickStats, [{ entityId: '1', values: { clickRate: 0.25, clicks: 5, impressions: 20 }, eventTimeMs: NOW - 1000 }]);
    eventLog = new EmbeddedLog();
    gateway = await startGateway({ config: testConfig({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey }), registry, store, eventLog });
  });

  after(async () => {
    await gateway?.close();
    await eventLog?.close();
    await store?.close();
    pki?.remove();
  });

  it('reports an https URL and answers a query over HTTPS', async () => {
    assert.match(gateway.url, /^https:\/\/127\.0\.0\.1:\d+\/graphql$/);
    const reply = await httpsPost(gateway.url, query, { ca });
    assert.equal(reply.status, 200, reply.body);
    assert.deepEqual(JSON.parse(reply.body), { data: { user: { clickStats: { clickRate: 0.25 } } } });
  });

  it('is refused by a client that does not trust the certificate (the certificate really is checked)', async () => {
    await assert.rejects(httpsPost(gateway.url, query, {}), (e: NodeJS.ErrnoException) => /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED/.test(e.code ?? ''));
  });

  it('does not answer plain HTTP on the TLS port', async () => {
    const plain = gateway.url.replace(/^https:/, 'http:');
    const outcome = await fetch(plain, { method: 'POST', headers: { 'content-type': 'application/json' }, body: query, signal: AbortSignal.timeout(10_000) })
      .then(async (r) => `HTTP ${r.status}: ${await r.text()}`, (e: Error) => `failed: ${e.message}`);
    assert.match(outcome, /^failed: /, `plain HTTP got an answer: ${outcome}`);
  });

  it('serves a graphql-ws subscription over wss on the same port', async () => {
    // The ws client with the test CA: graphql-ws constructs it with (url, protocol) only.
    class TrustingWebSocket extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols, { ca });
      }
    }
    const client = createClient({ url: gateway.url.replace(/^https:/, 'wss:'), webSocketImpl: TrustingWebSocket, retryAttempts: 0 });
    const events: unknown[] = [];
    let failure: unknown;
    const stop = client.subscribe({ query: 'subscription { featureChanged(entity: USER, ids: ["1"]) { id user { clickStats { clickRate } } } }' }, {
      next: (value) => void events.push(value),
      error: (error) => void (failure = error),
      complete: () => undefined,
    });
    try {
      await waitFor(() => gateway.subscriptions!.stats().active === 1 || failure !== undefined);
      assert.equal(failure, undefined, `subscription failed: ${String(failure)}`);
      await store.write(clickStats, [{ entityId: '1', values: { clickRate: 0.5, clicks: 10, impressions: 20 }, eventTimeMs: NOW - 500 }]);
      await eventLog.produce([encodeChange({
        entity: 'user', id: '1', view: 'clickStats', version: clickStats.version, values: { clickRate: 0.5 }, eventTime: new Date(NOW - 500).toISOString(),
        source: { topic: 'test-events', partition: 0, offset: 0 },
      })]);
      await waitFor(() => events.length > 0 || failure !== undefined);
      assert.deepEqual(events, [{ data: { featureChanged: { id: '1', user: { clickStats: { clickRate: 0.5 } } } } }]);
    } finally {
      stop();
      await client.dispose();
    }
  });
});

describe('the gateway with client certificates (TLS_CA_FILE)', () => {
  let pki: TestPki;
  let store: CodecStore;
  let gateway: RunningGateway;

  before(async () => {
    pki = makeTestPki();
    store = createStore({ kind: 'embedded' }, () => NOW);
    await store.write(clickStats, [{ entityId: '1', values: { clickRate: 0.75, clicks: 15, impressions: 20 }, eventTimeMs: NOW - 1000 }]);
    gateway = await startGateway({ config: testConfig({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey, TLS_CA_FILE: pki.caCert }), registry, store });
  });

  after(async () => {
    await gateway?.close();
    await store?.close();
    pki?.remove();
  });

  it('answers a client presenting a certificate the CA signed', async () => {
    const reply = await httpsPost(gateway.url, query, { ca: pki.read(pki.caCert), cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) });
    assert.equal(reply.status, 200, reply.body);
    assert.deepEqual(JSON.parse(reply.body), { data: { user: { clickStats: { clickRate: 0.75 } } } });
  });

  it('refuses a client without a certificate at the handshake', async () => {
    const outcome = await httpsPost(gateway.url, query, { ca: pki.read(pki.caCert) }).then((r) => `HTTP ${r.status}: ${r.body}`, (e: Error) => `failed: ${e.message}`);
    assert.match(outcome, /^failed: /, `answered without a client certificate: ${outcome}`);
  });
});

describe('the distributed shape over TLS (subgraph processes on HTTPS)', () => {
  let pki: TestPki;
  const processes: NodeProcess[] = [];
  let gatewayUrl: string;

  before(async () => {
    pki = makeTestPki();
    const tlsEnv = { TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey, DEMO_WRITER: 'false' };
    const urls: string[] = [];
    for (const entity of registry.entities) {
      const port = await freePort();
      processes.push(NodeProcess.spawn('subgraphs/main.js', ['--entity', entity.name, '--port', String(port)], tlsEnv));
      urls.push(`${entity.name}=https://127.0.0.1:${port}/graphql`);
    }
    const port = await freePort();
    gatewayUrl = `https://127.0.0.1:${port}/graphql`;
    // The gateway trusts the subgraphs' private CA the way the README says: NODE_EXTRA_CA_CERTS.
    processes.push(NodeProcess.spawn('gateway/main.js', [], { ...tlsEnv, PORT: String(port), SUBGRAPH_URLS: urls.join(','), NODE_EXTRA_CA_CERTS: pki.caCert }));
  });

  after(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    pki?.remove();
  });

  it('the gateway reaches every subgraph over HTTPS: /readyz lists them ready, and a query plans through them', async () => {
    const ca = pki.read(pki.caCert);
    const ready = await eventually(async () => {
      const reply = await httpsPost(gatewayUrl.replace('/graphql', '/readyz'), null, { ca });
      assert.equal(reply.status, 200, reply.body);
      return JSON.parse(reply.body);
    }, 90_000, 500).catch((error: Error) => {
      throw new Error(`${error.message}\n${processes.map((p) => p.output.slice(-2000)).join('\n---\n')}`);
    });
    for (const entity of registry.entities) assert.equal(ready.checks[`subgraph:${entity.name}`], 'ready', JSON.stringify(ready));
    const reply = await httpsPost(gatewayUrl, JSON.stringify({ query: '{ user(id: "1") { id clickStats { clickRate } } merchant(id: "1") { id } }' }), { ca });
    assert.equal(reply.status, 200, reply.body);
    const body = JSON.parse(reply.body);
    assert.equal(body.errors, undefined, reply.body);
    assert.deepEqual(Object.keys(body.data).sort(), ['merchant', 'user']);
  });
});

async function waitFor(predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
