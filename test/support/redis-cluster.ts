import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freePort } from './ports.js';
import { RedisProcess } from './redis-server.js';
import { eventually } from './wait.js';

const execFileAsync = promisify(execFile);

/** Runs a command; a failure carries its output (redis-cli says what is wrong on stdout). */
async function run(file: string, args: readonly string[], options: { timeout: number; maxBuffer?: number }): Promise<string> {
  try {
    return (await execFileAsync(file, args, { maxBuffer: 64 * 1024 * 1024, ...options })).stdout;
  } catch (error) {
    const e = error as Error & { stdout?: string; stderr?: string };
    const problems = (e.stdout ?? '').split('\n').filter((l) => /ERR|\[WARNING\]|error/i.test(l)).slice(-20).join('\n');
    throw new Error(`${file} ${args.slice(0, 3).join(' ')} … failed (${e.message.split('\n')[0]}):\n${problems}\n${(e.stdout ?? '').slice(-1000)}\nstderr: ${(e.stderr ?? '').slice(-2000)}`);
  }
}

/**
 * A real Redis Cluster from Debian's `redis-server`, for the integration
 * tests: N masters with R replicas each on free loopback ports, created by
 * `redis-cli --cluster create`, with a short `cluster-node-timeout` so a
 * failover happens within seconds. Every node is a RedisProcess (data in a
 * temporary directory with its `nodes.conf`), so a killed node restarts with
 * its identity and rejoins, as a real node would.
 *
 * `cluster-require-full-coverage no` is what a feature store wants (and what
 * the README tells operators to set): while one master's slots have no
 * serving node, the other masters keep answering for theirs.
 */
export interface ClusterNodeInfo {
  readonly id: string;
  /** `host:port` (the client port). */
  readonly address: string;
  readonly flags: readonly string[];
  readonly role: 'master' | 'replica';
  /** For a replica, its master's id. */
  readonly masterId: string | null;
  /** How many slots it serves (masters). */
  readonly slots: number;
  /** The slot ranges it serves, inclusive. */
  readonly ranges: readonly (readonly [number, number])[];
  readonly failed: boolean;
}

export class RedisCluster {
  private constructor(
    readonly nodes: RedisProcess[],
    readonly nodeTimeoutMs: number,
  ) {}

  static async start(options: { masters?: number; replicasPerMaster?: number; nodeTimeoutMs?: number } = {}): Promise<RedisCluster> {
    const masters = options.masters ?? 3;
    const replicas = options.replicasPerMaster ?? 1;
    const cluster = new RedisCluster([], options.nodeTimeoutMs ?? 2000);
    try {
      for (let i = 0; i < masters * (1 + replicas); i++) cluster.nodes.push(await cluster.startNode());
      await run('redis-cli', ['--cluster', 'create', ...cluster.nodes.map((n) => n.address), '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 60_000 });
      await cluster.waitHealthy();
    } catch (error) {
      await cluster.destroy();
      throw error;
    }
    return cluster;
  }

  /** Comma-separated `host:port` of every node: REDIS_CLUSTER_NODES. */
  get seeds(): string {
    return this.nodes.map((n) => n.address).join(',');
  }

  node(address: string): RedisProcess {
    const found = this.nodes.find((n) => n.address === address);
    if (!found) throw new Error(`no node ${address} in this cluster`);
    return found;
  }

  /** CLUSTER NODES as seen by a running node (the first that answers). */
  async topology(): Promise<ClusterNodeInfo[]> {
    let lastError: unknown;
    for (const node of this.nodes.filter((n) => n.running)) {
      try {
        return parseClusterNodes(bulk(await node.command('CLUSTER NODES')));
      } catch (error) {
        lastError = error;
      }
    }
    throw new Error(`no cluster node answers CLUSTER NODES: ${String(lastError)}`);
  }

  async masters(): Promise<ClusterNodeInfo[]> {
    return (await this.topology()).filter((n) => n.role === 'master' && !n.failed && n.slots > 0);
  }

  /**
   * Until every running node says `cluster_state:ok`, agrees on which
   * masters serve all 16384 slots, and every master has its replicas online.
   */
  async waitHealthy(timeoutMs = 60_000): Promise<void> {
    await eventually(async () => {
      const running = this.nodes.filter((n) => n.running);
      let view: string | undefined;
      for (const node of running) {
        const info = bulk(await node.command('CLUSTER INFO'));
        if (!/cluster_state:ok/.test(info)) throw new Error(`${node.address}: ${info.split('\r\n')[0]}`);
        const nodes = parseClusterNodes(bulk(await node.command('CLUSTER NODES')));
        if (nodes.length !== running.length || nodes.some((n) => n.failed || n.flags.includes('handshake'))) {
          throw new Error(`${node.address} sees ${nodes.length} nodes of ${running.length}: ${nodes.map((n) => `${n.address} ${n.flags.join(',')}`).join('; ')}`);
        }
        const masters = nodes.filter((n) => n.role === 'master' && n.slots > 0);
        if (masters.reduce((s, m) => s + m.slots, 0) !== 16384) throw new Error(`${node.address}: not every slot is served`);
        const here = masters.map((m) => `${m.address}:${m.slots}`).sort().join(',');
        if (view !== undefined && view !== here) throw new Error(`nodes disagree on the masters: ${view} vs ${here}`);
        view = here;
      }
      await this.waitForReplication(2000);
    }, timeoutMs, 200);
  }

  /**
   * Until each master's replicas have acknowledged its whole replication
   * stream: a value written before this call survives a failover.
   */
  async waitForReplication(timeoutMs = 15_000): Promise<void> {
    await eventually(async () => {
      for (const node of this.nodes.filter((n) => n.running)) {
        const info = bulk(await node.command('INFO replication'));
        if (!/role:master/.test(info)) continue;
        const offset = Number(/master_repl_offset:(\d+)/.exec(info)?.[1]);
        const replicas = [...info.matchAll(/slave\d+:ip=[^,]+,port=(\d+),state=(\w+),offset=(\d+)/g)];
        const connected = Number(/connected_slaves:(\d+)/.exec(info)?.[1] ?? 0);
        for (const [, port, state, replicaOffset] of replicas) {
          if (state !== 'online' || Number(replicaOffset) < offset) throw new Error(`${node.address}: replica :${port} ${state} at ${replicaOffset} of ${offset}`);
        }
        if (replicas.length !== connected) throw new Error(`${node.address}: replica list incomplete`);
      }
    }, timeoutMs, 50);
  }

  /** Starts a new empty node and adds it as a master with no slots (`redis-cli --cluster add-node`). */
  async addMaster(): Promise<RedisProcess> {
    const node = await this.startNode();
    this.nodes.push(node);
    const seed = (await this.masters())[0]!;
    await run('redis-cli', ['--cluster', 'add-node', node.address, seed.address], { timeout: 60_000 });
    await eventually(async () => {
      const known = (await this.topology()).find((n) => n.address === node.address);
      if (!known || known.flags.includes('handshake')) throw new Error(`${node.address} not yet known to the cluster`);
      for (const other of this.nodes.filter((n) => n.running)) {
        const sees = parseClusterNodes(bulk(await other.command('CLUSTER NODES')));
        if (!sees.some((n) => n.address === node.address && !n.flags.includes('handshake'))) throw new Error(`${other.address} does not see ${node.address} yet`);
      }
      // A master that just started reports the cluster down for its first 2 s (CLUSTER_WRITABLE_DELAY):
      // until then it refuses the keys a migration sends it.
      const info = bulk(await node.command('CLUSTER INFO'));
      if (!/cluster_state:ok/.test(info)) throw new Error(`${node.address}: ${info.split('\r\n')[0]}`);
    }, 30_000, 200);
    return node;
  }

  /** Moves `slots` slots from the other masters (evenly) to `to`, key by key, while the cluster serves. */
  async reshard(to: RedisProcess, slots: number): Promise<void> {
    const target = (await this.topology()).find((n) => n.address === to.address);
    if (!target) throw new Error(`${to.address} is not in the cluster`);
    const seed = (await this.masters()).find((m) => m.address !== to.address)!;
    await run('redis-cli', ['--cluster', 'reshard', seed.address, '--cluster-from', 'all', '--cluster-to', target.id,
      '--cluster-slots', String(slots), '--cluster-yes', '--cluster-pipeline', '50'], { timeout: 600_000 });
  }

  async flushAll(): Promise<void> {
    for (const master of await this.masters()) await this.node(master.address).command('FLUSHALL');
    await this.waitForReplication();
  }

  async destroy(): Promise<void> {
    for (const node of this.nodes) await node.destroy();
  }

  private async startNode(): Promise<RedisProcess> {
    // The cluster bus port is given explicitly: port + 10000 of an ephemeral port may not exist.
    const busPort = await freePort();
    return RedisProcess.start({}, [
      '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(busPort),
      '--cluster-node-timeout', String(this.nodeTimeoutMs), '--cluster-require-full-coverage', 'no',
    ]);
  }
}

/** The payload of a RESP bulk reply (`$<len>\r\n<payload>\r\n`); an error reply throws. */
export function bulk(reply: string): string {
  if (reply.startsWith('-')) throw new Error(reply.trim());
  const m = /^\$(\d+)\r\n/.exec(reply);
  if (!m) throw new Error(`not a bulk reply: ${JSON.stringify(reply.slice(0, 80))}`);
  return reply.slice(m[0].length, m[0].length + Number(m[1]));
}

/** Whether `node` serves `slot`. */
export function serves(node: ClusterNodeInfo, slot: number): boolean {
  return node.ranges.some(([a, b]) => slot >= a && slot <= b);
}

export function parseClusterNodes(text: string): ClusterNodeInfo[] {
  return text.split('\n').filter((l) => l.trim()).map((line) => {
    const [id, addr, flagText, master, , , , , ...slotSpecs] = line.trim().split(' ');
    const flags = flagText!.split(',');
    let slots = 0;
    const ranges: [number, number][] = [];
    for (const spec of slotSpecs) {
      if (spec.startsWith('[')) continue; // a slot being migrated or imported
      const [a, b] = spec.split('-').map(Number);
      ranges.push([a!, b ?? a!]);
      slots += (b ?? a!) - a! + 1;
    }
    return {
      id: id!,
      address: addr!.split('@')[0]!,
      flags,
      role: flags.includes('master') ? 'master' : 'replica',
      masterId: master === '-' ? null : master!,
      slots,
      ranges,
      failed: flags.includes('fail') || flags.includes('fail?'),
    } satisfies ClusterNodeInfo;
  });
}
