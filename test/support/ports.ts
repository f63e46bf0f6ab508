import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/**
 * Loopback ports for the servers the tests start.
 *
 * A port is chosen here and bound later by another process (a Kafka JVM binds its listeners a
 * second or more after), so in between anything else that asks for a free port may get the same
 * one. A CI run lost its Kafka broker so ("Address already in use" on the controller port) because
 * a Redis Cluster started beside it was handed that very port by a later bind(0) in this process.
 * So ports come from below the kernel's ephemeral range, which bind(0) and outgoing connections
 * never take from, and each is handed out once per test run: never twice by this process, and,
 * when the run has a shared directory (`FG_TEST_TMP`, set by scripts/test.sh), never to two of its
 * processes — claimed by creating a file there exclusively, which only one process can do.
 */
const claimed = new Set<number>();
const range = portRange();

export async function freePort(): Promise<number> {
  const size = range.high - range.low + 1;
  const start = Math.floor(Math.random() * size);
  for (let i = 0; i < size; i++) {
    const port = range.low + ((start + i) % size);
    if (claimed.has(port)) continue;
    if (!(await bindable(port))) continue;
    if (!claimAcrossProcesses(port)) continue;
    claimed.add(port);
    return port;
  }
  throw new Error(`no free loopback port left in ${range.low}-${range.high}`);
}

/** Up to 12,000 ports just below the ephemeral range (above it where the range starts too low). */
function portRange(): { low: number; high: number } {
  let ephemeral = { low: 32768, high: 60999 };
  try {
    const [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high)) ephemeral = { low: low!, high: high! };
  } catch {
    // Not Linux: the usual default.
  }
  if (ephemeral.low - 1024 >= 2000) return { low: Math.max(1024, ephemeral.low - 12_000), high: ephemeral.low - 1 };
  if (65535 - ephemeral.high >= 2000) return { low: ephemeral.high + 1, high: Math.min(65535, ephemeral.high + 12_000) };
  throw new Error(`the ephemeral port range ${ephemeral.low}-${ephemeral.high} leaves no room for test servers`);
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function claimAcrossProcesses(port: number): boolean {
  const runDir = process.env.FG_TEST_TMP;
  if (!runDir) return true;
  const dir = path.join(runDir, 'ports');
  fs.mkdirSync(dir, { recursive: true });
  try {
    fs.closeSync(fs.openSync(path.join(dir, String(port)), 'wx'));
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}
