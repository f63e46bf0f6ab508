import { spawn, type ChildProcess } from 'node:child_process';
import { killOnExit, signalAndWait } from './child.js';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { fromRoot } from '../../runtime/paths.js';
import { freePort } from './ports.js';

export interface KafkaBrokerOptions {
  /** JVM heap ceiling (-Xmx), in MiB. Default 512. */
  heapMb?: number;
  /** How long `start()`/`restart()` wait for the broker to answer an admin client. Default 60 s. */
  startTimeoutMs?: number;
  /** Extra server.properties entries; they override the defaults below. */
  properties?: Record<string, string | number | boolean>;
  /** The client listener speaks SASL_PLAINTEXT with mechanism PLAIN and this one user (the broker's own too). */
  sasl?: { readonly username: string; readonly password: string };
  /**
   * The client listener speaks TLS with this PEM certificate and key (also presented between
   * brokers, so it needs clientAuth usage when client certificates are required), trusting `caFile`.
   * `probe`: the client certificate the readiness probe presents when `requireClientCert`.
   */
  tls?: {
    readonly certFile: string; readonly keyFile: string; readonly caFile: string;
    readonly requireClientCert: boolean; readonly probe?: { readonly cert: string; readonly key: string };
  };
}

/** The jars scripts/ensure-kafka.sh fetched from Maven Central (infra/kafka/pom.xml). */
const libsDir = fromRoot('infra', 'kafka', 'target', 'libs');

/**
 * A real Apache Kafka broker (KRaft mode, combined broker + controller, one
 * node) on free loopback ports, for the integration tests. Its jars come from
 * Maven Central through infra/kafka/pom.xml (scripts/ensure-kafka.sh), its
 * config, logs and data live in a temporary directory under
 * `$FG_TEST_TMP` (whose path is on the java command line, so the test
 * runner's cleanup finds the JVM). `restart()` after `stop()` or `kill()`
 * comes back on the same ports with the same data, as a real restart of the
 * node would.
 */
export class KafkaBroker {
  private child: ChildProcess | null = null;
  readonly dir: string;
  readonly propertiesFile: string;
  /** The broker's own log (log4j2), the first place to look when something fails. */
  readonly logFile: string;
  private readonly stdioFile: string;
  private readonly startTimeoutMs: number;
  private readonly sasl: KafkaBrokerOptions['sasl'];
  private readonly tls: KafkaBrokerOptions['tls'];
  private readonly heapMb: number;

  private constructor(
    readonly port: number,
    readonly controllerPort: number,
    options: KafkaBrokerOptions,
  ) {
    this.dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), `fg-kafka-${port}-`));
    this.propertiesFile = path.join(this.dir, 'server.properties');
    this.logFile = path.join(this.dir, 'broker.log');
    this.stdioFile = path.join(this.dir, 'jvm.out');
    this.startTimeoutMs = options.startTimeoutMs ?? 60_000;
    this.sasl = options.sasl;
    this.tls = options.tls;
    this.heapMb = options.heapMb ?? 512;
    const properties: Record<string, string | number | boolean> = {
      'process.roles': 'broker,controller',
      'node.id': 1,
      'controller.quorum.voters': `1@127.0.0.1:${controllerPort}`,
      listeners: `PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      'advertised.listeners': `PLAINTEXT://127.0.0.1:${port}`,
      'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      'controller.listener.names': 'CONTROLLER',
      'inter.broker.listener.name': 'PLAINTEXT',
      'log.dirs': path.join(this.dir, 'data'),
      'num.partitions': 1,
      'auto.create.topics.enable': false,
      'offsets.topic.replication.factor': 1,
      'offsets.topic.num.partitions': 1,
      'transaction.state.log.replication.factor': 1,
      'transaction.state.log.min.isr': 1,
      'transaction.state.log.num.partitions': 1,
      'share.coordinator.state.topic.replication.factor': 1,
      'share.coordinator.state.topic.min.isr': 1,
      'group.initial.rebalance.delay.ms': 0,
      // After a SIGKILL the restarted node can register only once its previous
      // incarnation's session expired (default 9 s): keep that short.
      'broker.session.timeout.ms': 4000,
      'broker.heartbeat.interval.ms': 500,
      'num.network.threads': 2,
      'num.io.threads': 4,
      ...(options.sasl ? saslProperties(options.sasl) : {}),
      ...(options.tls ? tlsProperties(options.tls, this.dir) : {}),
      ...options.properties,
    };
    fs.writeFileSync(
      this.propertiesFile,
      Object.entries(properties).map(([key, value]) => `${key}=${String(value)}\n`).join(''),
    );
    fs.writeFileSync(
      path.join(this.dir, 'log4j2.properties'),
      [
        'status = warn',
        'appender.file.type = File',
        'appender.file.name = file',
        `appender.file.fileName = ${this.logFile}`,
        'appender.file.layout.type = PatternLayout',
        'appender.file.layout.pattern = [%d] %p %m (%c)%n',
        'rootLogger.level = INFO',
        'rootLogger.appenderRef.file.ref = file',
        // The chattiest loggers, down to what matters when a test fails.
        'logger.state.name = state.change.logger',
        'logger.state.level = WARN',
        '',
      ].join('\n'),
    );
  }

  /** Formats a fresh data directory with a random cluster id and starts the broker. */
  static async start(options: KafkaBrokerOptions = {}): Promise<KafkaBroker> {
    if (!fs.existsSync(path.join(libsDir, '.complete'))) {
      throw new Error(`Kafka broker jars missing in ${libsDir}: run \`bash scripts/ensure-kafka.sh\` first`);
    }
    const port = await freePort();
    let controllerPort = await freePort();
    while (controllerPort === port) controllerPort = await freePort();
    const broker = new KafkaBroker(port, controllerPort, options);
    try {
      await broker.format();
      await broker.restart();
    } catch (error) {
      await broker.destroy();
      throw error;
    }
    return broker;
  }

  /** Bootstrap servers for a client, e.g. `['127.0.0.1:40123']`. */
  get brokers(): string[] {
    return [`127.0.0.1:${this.port}`];
  }

  get running(): boolean {
    return this.child !== null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /**
   * Starts the broker on the same ports with the same data (after `stop()` or
   * `kill()`), and resolves once an admin client can list topics and the
   * group coordinator has loaded the committed offsets. On a running
   * broker it stops it gracefully first.
   */
  async restart(): Promise<void> {
    if (this.child) await this.stop();
    const out = fs.openSync(this.stdioFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(javaBinary(), [
        ...jvmOptions(this.heapMb),
        `-Dlog4j2.configurationFile=${path.join(this.dir, 'log4j2.properties')}`,
        `-Dkafka.logs.dir=${this.dir}`,
        '-cp', path.join(libsDir, '*'),
        'kafka.Kafka', this.propertiesFile,
      ], { stdio: ['ignore', out, out] });
    } finally {
      fs.closeSync(out);
    }
    this.child = killOnExit(child);
    let exited: string | null = null;
    child.once('exit', (code, signal) => {
      exited = `exited with ${signal ?? `code ${code}`}`;
      if (this.child === child) this.child = null;
    });
    child.once('error', (error) => {
      exited = `could not start: ${error.message}`;
    });
    try {
      await this.waitUntilServing(() => exited);
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /** SIGTERM, i.e. a controlled shutdown that flushes the logs; waits for the JVM to exit (SIGKILL after 30 s). */
  async stop(): Promise<void> {
    if (this.child) await signalAndWait(this.child, 'SIGTERM', 30_000);
  }

  /** SIGKILL: the broker dies without a shutdown; waits for the process to be gone. */
  async kill(): Promise<void> {
    if (this.child) await signalAndWait(this.child, 'SIGKILL');
  }

  /** Kills the broker and removes its directory (config, logs, data). */
  async destroy(): Promise<void> {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** The last lines of the broker's log and of the JVM's own output, for error messages. */
  logTail(lines = 40): string {
    const tail = (file: string): string => {
      try {
        return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    };
    return [`--- ${this.logFile}`, tail(this.logFile), `--- ${this.stdioFile}`, tail(this.stdioFile)].join('\n');
  }

  /** KRaft storage format (`kafka-storage.sh format`), once, with a fresh random cluster id. */
  private async format(): Promise<void> {
    // A Kafka Uuid is 16 random bytes in unpadded base64url.
    const clusterId = randomBytes(16).toString('base64url');
    const child = spawn(javaBinary(), [
      ...jvmOptions(256),
      `-Dlog4j2.configurationFile=${path.join(this.dir, 'log4j2.properties')}`,
      '-cp', path.join(libsDir, '*'),
      // `--cluster-id=<id>` in one argument: a base64url id may start with '-', which the parser would read as an option.
      'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '--config', this.propertiesFile,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) throw new Error(`kafka storage format failed (exit ${code}):\n${output.trim()}`);
  }

  private async waitUntilServing(exited: () => string | null): Promise<void> {
    const started = Date.now();
    const kafka = new Kafka({
      clientId: 'fg-test-broker-probe',
      brokers: this.brokers,
      ...(this.sasl ? { sasl: { mechanism: 'plain' as const, ...this.sasl } } : {}),
      ...(this.tls ? { ssl: { ca: [fs.readFileSync(this.tls.caFile, 'utf8')], ...this.tls.probe } } : {}),
      logLevel: logLevel.NOTHING,
      connectionTimeout: 1000,
      requestTimeout: 2000,
      retry: { retries: 0 },
    });
    let lastError = 'no answer yet';
    for (;;) {
      const why = exited();
      if (why) throw new Error(`Kafka broker on ${this.brokers[0]} ${why}\n${this.logTail()}`);
      if (Date.now() - started > this.startTimeoutMs) {
        throw new Error(
          `Kafka broker on ${this.brokers[0]} did not serve within ${this.startTimeoutMs} ms (${lastError})\n${this.logTail()}`,
        );
      }
      const admin = kafka.admin({ retry: { retries: 0 } });
      try {
        await admin.connect();
        await admin.listTopics();
        const cluster = await admin.describeCluster();
        if (cluster.brokers.length === 0) {
          lastError = 'no broker registered yet';
        } else {
          // The group coordinator answers only once __consumer_offsets is created (first
          // start) or loaded (restart); until then group calls fail with
          // COORDINATOR_LOAD_IN_PROGRESS, which kafkajs' admin does not retry.
          // (offsets.topic.num.partitions=1: one probe covers every group.)
          await admin.fetchOffsets({ groupId: 'fg-test-broker-probe' });
          return;
        }
      } catch (error) {
        lastError = error instanceof Error ? error.message : String(error);
      } finally {
        await admin.disconnect().catch(() => {});
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

function javaBinary(): string {
  const home = process.env.JAVA_HOME;
  if (home) {
    const java = path.join(home, 'bin', 'java');
    if (fs.existsSync(java)) return java;
  }
  return 'java';
}

/**
 * A small JVM for tests: a bounded heap, the serial GC, and the C1 compiler
 * only (about 1 s quicker to start; lower peak throughput, so not for benchmarks).
 */
function jvmOptions(heapMb: number): string[] {
  return [
    `-Xmx${heapMb}m`,
    '-Xms64m',
    '-XX:+UseSerialGC',
    '-XX:TieredStopAtLevel=1',
    '-Djava.awt.headless=true',
    '-Djava.net.preferIPv4Stack=true',
  ];
}

/**
 * The client listener (named PLAINTEXT, also used between brokers) mapped to
 * SASL_PLAINTEXT with PLAIN and one user; the controller listener stays plain.
 */
function saslProperties({ username, password }: { username: string; password: string }): Record<string, string> {
  return {
    'listener.security.protocol.map': 'PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT',
    'sasl.enabled.mechanisms': 'PLAIN',
    'sasl.mechanism.inter.broker.protocol': 'PLAIN',
    'listener.name.plaintext.plain.sasl.jaas.config':
      `org.apache.kafka.common.security.plain.PlainLoginModule required username="${username}" password="${password}" user_${username}="${password}";`,
  };
}

/**
 * The client listener (named PLAINTEXT, also used between brokers) mapped to
 * SSL, with a PEM keystore (key then certificate, in one file) and a PEM
 * truststore; the controller listener stays plain.
 */
function tlsProperties(tls: NonNullable<KafkaBrokerOptions['tls']>, dir: string): Record<string, string> {
  const keystore = path.join(dir, 'broker-keystore.pem');
  fs.writeFileSync(keystore, fs.readFileSync(tls.keyFile, 'utf8') + fs.readFileSync(tls.certFile, 'utf8'));
  return {
    'listener.security.protocol.map': 'PLAINTEXT:SSL,CONTROLLER:PLAINTEXT',
    'ssl.keystore.type': 'PEM',
    'ssl.keystore.location': keystore,
    'ssl.truststore.type': 'PEM',
    'ssl.truststore.location': tls.caFile,
    'ssl.client.auth': tls.requireClientCert ? 'required' : 'none',
  };
}
