import { spawn, type ChildProcess } from 'node:child_process';
import { killOnExit, signalAndWait } from './child.js';
import { freePort } from './ports.js';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * A real `redis-server` (Debian's package) on a free loopback port, for the
 * integration tests. Data lives in a temporary directory, so `restart()`
 * after `stop()` comes back with the data saved at shutdown, as a real
 * restart of a node with persistence would.
 */
export interface RedisSecurity {
  /** `requirepass`: the default user's password. */
  readonly password?: string;
  /** An ACL user with all permissions. */
  readonly user?: { readonly name: string; readonly password: string };
  /** A TLS port beside the plain one (the harness keeps using the plain one). */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string; readonly requireClientCert: boolean };
}

export class RedisProcess {
  private child: ChildProcess | null = null;
  readonly dir: string;

  private constructor(
    readonly port: number,
    readonly tlsPort: number | null,
    private readonly security: RedisSecurity,
    /** More `redis-server` arguments (a cluster node's, say), kept across restarts. */
    private readonly extraArgs: readonly string[],
  ) {
    this.dir = fs.mkdtempSync(path.join(process.env.FG_TEST_TMP ?? os.tmpdir(), `fg-redis-${port}-`));
  }

  static async start(security: RedisSecurity = {}, extraArgs: readonly string[] = [], port?: number): Promise<RedisProcess> {
    const redis = new RedisProcess(port ?? await freePort(), security.tls ? await freePort() : null, security, extraArgs);
    await redis.restart();
    return redis;
  }

  /** `host:port`, as metrics, errors and cluster seeds name the node. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The TLS port's URL (started with `tls`). */
  get tlsUrl(): string {
    if (this.tlsPort === null) throw new Error('this redis-server has no TLS port');
    return `rediss://127.0.0.1:${this.tlsPort}`;
  }

  private get securityArgs(): string[] {
    const { password, user, tls } = this.security;
    const args: string[] = [];
    if (password !== undefined) args.push('--requirepass', password);
    if (user) args.push('--user', user.name, 'on', `>${user.password}`, '~*', '&*', '+@all');
    if (tls && this.tlsPort !== null) {
      args.push('--tls-port', String(this.tlsPort), '--tls-cert-file', tls.cert, '--tls-key-file', tls.key, '--tls-ca-cert-file', tls.ca,
        '--tls-auth-clients', tls.requireClientCert ? 'yes' : 'no');
    }
    return args;
  }

  get running(): boolean {
    return this.child !== null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async restart(): Promise<void> {
    if (this.child) return;
    const binary = process.env.REDIS_SERVER_BIN ?? 'redis-server';
    const child = spawn(binary, [
      '--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--save', '', '--appendonly', 'no', '--dbfilename', 'dump.rdb', '--protected-mode', 'yes',
      ...this.securityArgs, ...this.extraArgs,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = killOnExit(child);
    child.once('exit', () => {
      if (this.child === child) this.child = null;
    });
    await waitForPort(this.port, 10_000, this.security.password);
  }

  /** SHUTDOWN SAVE: persists the data set, so `restart()` brings it back. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await command(this.port, 'SHUTDOWN SAVE', this.security.password).catch(() => child.kill('SIGKILL'));
    await exited;
  }

  /** SAVE: writes the data set to the RDB file now, so a restart after a crash (`kill()`) comes back with it. */
  async save(): Promise<void> {
    const reply = await command(this.port, 'SAVE');
    if (!reply.startsWith('+OK')) throw new Error(`redis ${this.port}: SAVE answered ${JSON.stringify(reply)}`);
  }

  /** Drops everything, for a clean slate between tests. */
  async flush(): Promise<void> {
    await command(this.port, 'FLUSHALL', this.security.password);
  }

  /** One inline command (see `redisCommand`), its raw RESP reply. */
  command(text: string): Promise<string> {
    return command(this.port, text, this.security.password);
  }

  /** `INFO commandstats` as { command: calls }, e.g. { mget: 3 }. */
  async commandCalls(): Promise<Record<string, number>> {
    const info = await command(this.port, 'INFO commandstats', this.security.password);
    const out: Record<string, number> = {};
    for (const m of info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)) out[m[1]!] = Number(m[2]);
    return out;
  }

  async resetStats(): Promise<void> {
    await command(this.port, 'CONFIG RESETSTAT', this.security.password);
  }

  async kill(): Promise<void> {
    if (this.child) await signalAndWait(this.child, 'SIGKILL');
  }

  async destroy(): Promise<void> {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function waitForPort(port: number, timeoutMs: number, password?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await command(port, 'PING', password)).includes('PONG')) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * One inline command over a raw socket (its connection closed before it resolves): no client library in the harness, so it cannot mask a client bug.
 * With `password`, AUTH goes first and its +OK is dropped from the reply.
 */
export function redisCommand(port: number, text: string, password?: string): Promise<string> {
  return command(port, text, password);
}

function command(port: number, text: string, password?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = '';
    let authReply = password !== undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis ${port}: no answer to ${text}`));
    }, 2000);
    socket.on('connect', () => socket.write(`${password !== undefined ? `AUTH ${password}\r\n` : ''}${text}\r\n`));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (authReply) {
        if (!data.includes('\r\n')) return;
        authReply = false;
        data = data.slice(data.indexOf('\r\n') + 2);
        if (data === '') return;
      }
      // A bulk reply ($len) is complete once its payload has arrived; simple replies end at the first CRLF.
      const bulk = /^\$(\d+)\r\n/.exec(data);
      if (!bulk ? data.includes('\r\n') : data.length >= bulk[0].length + Number(bulk[1]) + 2) {
        clearTimeout(timer);
        // Resolved on 'close': by then the server has read the end of this connection too, so a
        // caller counting the server's read events (INFO stats) sees this connection's all counted.
        socket.end();
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}
