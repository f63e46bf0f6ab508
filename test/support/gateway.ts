import { spawn, type ChildProcess } from 'node:child_process';
import { inheritedEnv } from './aerospike.js';
import { killOnExit, signalAndWait } from './child.js';
import { loadConfig, type Config } from '../../runtime/config.js';
import { fromRoot } from '../../runtime/paths.js';
import { startGateway, type RunningGateway } from '../../gateway/server.js';
import { loadRegistry } from '../../schema/registry.js';
import type { Registry } from '../../schema/types.js';
import type { OnlineStore } from '../../store/online-store.js';
import { freePort } from './ports.js';

export const registry: Registry = loadRegistry();

/** Config as a test wants it: a free port, no demo data, overrides on top. */
export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({ PORT: '0', DEMO_SEED: 'false', DEMO_WRITER: 'false', ...env });
}

export async function startTestGateway(store: OnlineStore | undefined, env: Record<string, string> = {}): Promise<RunningGateway> {
  return startGateway({ config: testConfig(env), registry, store });
}

/** A process of this project (`dist/…` entry point) with its output kept for failure messages. */
export class NodeProcess {
  output = '';
  private constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  static spawn(script: string, args: string[], env: Record<string, string>): NodeProcess {
    const child = spawn(process.execPath, [fromRoot('dist', script), ...args], {
      env: { ...inheritedEnv(), LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new NodeProcess(killOnExit(child));
  }

  async stop(): Promise<void> {
    await signalAndWait(this.child, 'SIGTERM', 5000);
  }
}

/** Polls `url` until it answers 200, or fails naming the process output. */
export async function waitUntilReady(url: string, proc?: NodeProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    if (proc && proc.child.exitCode !== null) throw new Error(`process exited (${proc.child.exitCode}) before ready:\n${proc.output}`);
    if (Date.now() > deadline) throw new Error(`${url} not ready within ${timeoutMs} ms${proc ? `:\n${proc.output}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The three entity subgraphs as separate processes, plus the env a distributed gateway needs to reach them. */
export async function spawnSubgraphs(env: Record<string, string>): Promise<{ processes: NodeProcess[]; subgraphUrls: string }> {
  const processes: NodeProcess[] = [];
  const urls: string[] = [];
  for (const entity of registry.entities) {
    const port = await freePort();
    const proc = NodeProcess.spawn('subgraphs/main.js', ['--entity', entity.name, '--port', String(port)], {
      DEMO_SEED: 'false', DEMO_WRITER: 'false', ...env,
    });
    processes.push(proc);
    urls.push(`${entity.name}=http://127.0.0.1:${port}/graphql`);
  }
  await Promise.all(processes.map((p, i) => waitUntilReady(urls[i]!.split('=')[1]!.replace('/graphql', '/readyz'), p)));
  return { processes, subgraphUrls: urls.join(',') };
}
